"""Per-vendor storage quotas: how many bytes each vendor's releases may take.

A vendor's usage is every version of its metadata plus each distinct file under
its namespace (``<vendor>/...``); every version stays served, so nothing a vendor
publishes is ever freed. A release that would take the vendor past its quota is
refused before any of its files is stored (the server answers 413).

The quotas live in the registry folder's ``quotas.json`` (bytes; ``default`` for
vendors not listed, 2 GiB when absent) and are read at each upload, so a change takes
effect at once, without restarting the server::

    {"default": 2147483648, "vendors": {"acme": 10737418240}}

Example:
    >>> VendorQuotas.load(Path("my-registry/quotas.json")).limit("acme")  # doctest: +SKIP
    10737418240
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from photoimmune.sdk.io import atomic_write_bytes

from .errors import ReleaseRejectedError

#: What a vendor may store unless the registry's ``quotas.json`` says otherwise: generous
#: for attack targets (tens of MB each), small enough that no one vendor fills a disk.
DEFAULT_VENDOR_QUOTA = 2 * 1024**3


@dataclass(frozen=True)
class VendorQuotas:
    """The quota of every vendor: ``vendors[name]`` where set, else ``default`` (bytes)."""

    default: int = DEFAULT_VENDOR_QUOTA
    vendors: dict[str, int] = field(default_factory=dict)

    def limit(self, vendor: str) -> int:
        return self.vendors.get(vendor, self.default)

    @classmethod
    def load(cls, path: Path) -> VendorQuotas:
        """The quotas in ``path`` (a registry's ``quotas.json``); the defaults if it is missing."""
        if not path.is_file():
            return cls()
        try:
            document = json.loads(path.read_text())
            quotas = cls(
                default=_bytes(document.get("default", DEFAULT_VENDOR_QUOTA)),
                vendors={str(k): _bytes(v) for k, v in document.get("vendors", {}).items()},
            )
        except (OSError, ValueError, TypeError, AttributeError) as err:
            # Said to whoever uploads: the file's name, never where the registry lives.
            raise ReleaseRejectedError(
                f"the registry's {path.name} is not valid ({err}); its operator must fix it: "
                '{"default": BYTES, "vendors": {"VENDOR": BYTES}}'
            ) from None
        return quotas

    def save(self, path: Path) -> None:
        document = {"default": self.default, "vendors": dict(sorted(self.vendors.items()))}
        atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode(), overwrite=True)


def format_size(size: int) -> str:
    """``size`` bytes for people: ``"2.0 GiB"``, ``"512 B"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a number of bytes")
    return value
