"""Server URLs a user types: what makes one unusable, said before anything is requested.

Example:
    >>> url_problem("http://127.0.0.1:8470") is None
    True
    >>> url_problem("http://127.0.0.1:abc")
    "its port 'abc' is not a number from 0 to 65535"
"""

from __future__ import annotations

from urllib.parse import urlsplit


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name an http(s) server (None if it can): another scheme, no host,
    a port that is no number, an unclosed ``[IPv6``, a space."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is no number or out of range)
    except ValueError as err:  # urlsplit's own words tell the host from the port
        if "IPv6" in str(err) or "[" in url:
            return "its host is not a well-formed [IPv6] address"
        port = url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")[2]
        return f"its port {port!r} is not a number from 0 to 65535"
    if parts.scheme not in ("http", "https"):
        return "it is not http:// or https://"
    if not parts.hostname:
        return "it names no host"
    if any(c.isspace() for c in url):
        return "it holds a space"
    return None


__all__ = ["url_problem"]
