"""Asking resolvers for the manifest of a stripped image, and judging what comes back.

:func:`recover` computes the image's ISCC code locally and sends only that
(16 hex digits) to each resolver: the image never leaves the machine. The
resolver answers the signed assets whose codes are near; each is fetched, its
manifest read and judged as usual, and its pixels compared with the query's
(:func:`similarity`, after cutting out the region whose code matched). A recovered
manifest speaks for the query only when the pixels are close
(:attr:`Recovery.counts`): a code collision, or a different photo that happens to
look alike at 32x32, is reported but never counted.

A resolver is any URL someone typed: each request has one deadline
(:data:`DEADLINE_S`) and a size limit, however slowly or endlessly it answers, and
an answer that is not a resolver's is a :class:`ResolverUnavailableError` naming
the URL, like a resolver that is down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from photoimmune.sdk.codec import DEFAULT_MAX_BYTES, decode_image
from photoimmune.sdk.deadline import Deadline
from photoimmune.sdk.errors import ImageLoadError
from photoimmune.sdk.manifest import ManifestReport, TrustAnchors, read_manifest
from photoimmune.sdk.softbinding import ALGORITHM, Region, image_code

from .errors import ResolverError, ResolverUnavailableError, UnknownAssetError
from .match import LookupAnswer, Match

#: Pixels at least this similar (:func:`similarity`: grey and high-pass 64x64 thumbnails,
#: best of small shifts and of the signed file's regions) are the same picture.
#: bench/softbinding.py: re-saved copies at p1 0.71, unrelated photos at most 0.49;
#: the grey thumbnails alone put them at 0.86 and 0.89, inseparable (docs/manifests.md).
CLOSE_SIMILARITY = 0.55
_THUMB = 64
_MAX_SHIFT = 3  # thumbnail pixels: what a region's residual offset leaves
#: Seconds one request to a resolver may take in all, over however many reads.
DEADLINE_S = 60.0
#: Bytes a lookup's answer may have: a store answers a few matches of ~100 bytes each.
MAX_ANSWER_BYTES = 1 << 20
#: Bytes a signed asset may have: the most a store records (its decoder's limit).
MAX_ASSET_BYTES = DEFAULT_MAX_BYTES


class Recovery(BaseModel):
    """A manifest recovered through a soft binding, not bound to the query's bytes."""

    model_config = ConfigDict(frozen=True)

    resolver: str
    asset: int
    distance: int = Field(description="bits between the query's code and the asset's")
    region: Region = Field(description="the part of the signed asset the code matched")
    similarity: float = Field(description="how alike the pixels are to the signed asset")
    pixels_close: bool
    manifest: ManifestReport = Field(description="the signed asset's manifest, judged")
    signed_asset: bytes = Field(repr=False, exclude=True)

    @property
    def counts(self) -> bool:
        """Whether the recovered manifest may speak for the query: trusted and close."""
        return self.manifest.ok and self.pixels_close


class ResolverClient:
    """One resolver over HTTP: each request ends within ``deadline`` seconds (each read
    within ``timeout``). Example:

    >>> ResolverClient("http://127.0.0.1:8500").lookup(0x0123456789ABCDEF)  # doctest: +SKIP
    []
    """

    def __init__(self, url: str, *, timeout: float = 10.0, deadline: float = DEADLINE_S) -> None:
        self.url = url.rstrip("/")
        self.deadline = deadline
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            # A new connection per request, so the deadline's watchdog sees its socket.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def lookup(self, code: int) -> list[Match]:
        """Stored assets with a code near ``code``, nearest first (sends only the code)."""
        params = {"alg": ALGORITHM, "code": f"{code:016x}"}
        with self._answer("/v1/lookup", MAX_ANSWER_BYTES, params) as body:
            return LookupAnswer.model_validate_json(body).matches

    def asset(self, asset_id: int) -> bytes:
        """A stored asset's signed bytes."""
        with self._answer(f"/v1/assets/{asset_id}", MAX_ASSET_BYTES) as body:
            return body

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def _answer(self, path: str, max_bytes: int, params: dict | None = None) -> Iterator[bytes]:
        """The body of a successful ``GET path``, read within the deadline and ``max_bytes``;
        errors reading it, and reading what it says inside the block, become ours."""
        with Deadline(self.deadline) as deadline, _translated(self.url, deadline):
            with self._http.stream(
                "GET",
                path,
                params=params,
                timeout=deadline.within(self._http.timeout),
                extensions={"trace": deadline.trace},
            ) as response:
                body = _read(response, max_bytes, self.url, deadline)
            _raise_for(response, body, self.url)
            yield body


def recover(
    pixels: np.ndarray,
    resolvers: Sequence[str | ResolverClient],
    *,
    trust: TrustAnchors = None,
) -> Recovery | None:
    """The manifest the resolvers hold for ``pixels``, or None when none holds one.

    Resolvers are asked in order; the first recovery that :attr:`~Recovery.counts`
    wins, else the nearest candidate is returned (so a verdict can say why it does
    not count).

    Raises:
        ResolverUnavailableError: a resolver could not be reached, or did not answer as
            one: not its JSON, more than :data:`MAX_ANSWER_BYTES` (an asset: more than
            :data:`MAX_ASSET_BYTES`), or not within its client's deadline.
        ResolverError: a resolver refused the request (4xx; a 404 is UnknownAssetError).

    Example:
        >>> copy = load_image("copy.jpg").pixels  # doctest: +SKIP
        >>> found = recover(copy, ["http://127.0.0.1:8500"])  # doctest: +SKIP
        >>> found.counts, found.manifest.protected_against  # doctest: +SKIP
        (True, ('photoimmune/tiny-ldm@1',))
    """
    code = image_code(pixels)
    best: Recovery | None = None
    for given in resolvers:
        client = given if isinstance(given, ResolverClient) else ResolverClient(given)
        try:
            for match in client.lookup(code):
                found = _judge(client, match, pixels, trust)
                if found is None:
                    continue
                if found.counts:
                    return found
                best = best or found
        finally:
            if client is not given:
                client.close()
    return best


def _judge(
    client: ResolverClient, match: Match, pixels: np.ndarray, trust: TrustAnchors
) -> Recovery | None:
    data = client.asset(match.asset)
    try:
        asset_pixels = decode_image(data).pixels
    except ImageLoadError:  # a store answering garbage: not a recovery
        return None
    manifest = read_manifest(data, trust=trust, pixels=asset_pixels)
    # Every region of the soft binding, not only the nearest code's: codes of regions a
    # few percent apart are often equally near, and the nearest may be misaligned
    # (bench/softbinding.py: trying only those within 4 bits lost 6 % of the copies).
    regions = [b.region for b in manifest.soft_binding] or [match.region]
    score = closeness(pixels, asset_pixels, regions)
    return Recovery(
        resolver=client.url,
        asset=match.asset,
        distance=match.distance,
        region=match.region,
        similarity=round(score, 4),
        pixels_close=score >= CLOSE_SIMILARITY,
        manifest=manifest,
        signed_asset=data,
    )


def closeness(query: np.ndarray, signed: np.ndarray, regions: Sequence[Region]) -> float:
    """How close ``query`` is to the signed picture: the best :func:`similarity` over the
    regions its soft binding covers (the copy may be any of those crops).

    Example:
        >>> x = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
        >>> round(closeness(x[4:76, 4:76], x, [Region(x=5, y=5, width=90, height=90)]), 3)
        1.0
    """
    return max(similarity(query, region.crop(signed)) for region in regions)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two pictures are (-1 to 1), at two scales: the mean of the correlations
    of their grey thumbnails (64x64, or the smaller picture's size) and of those
    thumbnails' high-pass residuals (each minus its 3x3 local mean), best over shifts
    of up to 5 % of a side.

    The grey thumbnails alone tell large shapes apart but not fine detail: two
    dark, nearly featureless photos, or two blurred ones, correlate as well as a
    picture and its re-saved copy. The residuals carry the detail that makes a
    picture itself, and they are left largely intact by JPEG and halving; smooth
    pictures, whose residuals are mostly noise, are still told apart by their shapes.
    Correlation already ignores brightness and contrast, so dark pictures need no
    other normalisation.

    Example:
        >>> x = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
        >>> round(similarity(x, x), 3)
        1.0
        >>> similarity(x, x[::-1]) < 0.3  # the same noise, upside down
        True
    """
    # Never finer than the smaller picture: upscaled JPEG blocks are not detail.
    size = max(16, min(_THUMB, *a.shape[:2], *b.shape[:2]))
    margin = max(1, size * _MAX_SHIFT // _THUMB)
    scales = _correlations(_scales(a, size), _scales(b, size), margin)
    return float(scales.mean(axis=0).max())


def _scales(pixels: np.ndarray, size: int) -> np.ndarray:
    """The grey thumbnail and its high-pass residual, ``(2, size, size)``."""
    grey = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    thumb = np.asarray(grey.resize((size, size), Image.Resampling.BOX), np.float64)
    padded = np.pad(thumb, 1, mode="edge")
    local_mean = (
        sum(padded[dy : dy + size, dx : dx + size] for dy in range(3) for dx in range(3)) / 9
    )
    return np.stack([thumb, thumb - local_mean])


def _correlations(a: np.ndarray, b: np.ndarray, margin: int) -> np.ndarray:
    """Correlation of each of ``a``'s channels, cut by ``margin`` on every side, with the
    same channel of each window of ``b`` it can be shifted to: ``(channels, shifts)``.
    A flat channel (no variance) correlates 0 with anything."""
    n = a.shape[1] - 2 * margin
    core = a[:, margin:-margin, margin:-margin]
    core = core - core.mean(axis=(1, 2), keepdims=True)
    core_norm = np.sqrt((core * core).sum(axis=(1, 2)))[:, None, None]
    windows = sliding_window_view(b, (n, n), axis=(1, 2))  # (channels, dy, dx, n, n)
    # The core sums to 0, so the windows' own means drop out of the numerator.
    products = np.einsum("kyx,kijyx->kij", core, windows)
    sums = windows.sum(axis=(3, 4))
    squares = sliding_window_view(b * b, (n, n), axis=(1, 2)).sum(axis=(3, 4))
    spread = np.sqrt(np.maximum(squares - sums * sums / (n * n), 0)) * core_norm
    flat = spread < 1e-9
    found = np.where(flat, 0.0, products / np.where(flat, 1.0, spread))
    return found.reshape(len(a), -1)


def _check(deadline: Deadline, url: str) -> None:
    """Raise once the deadline has passed."""
    if deadline.passed:
        raise ResolverUnavailableError(
            f"{url} sent no complete answer within {deadline.seconds:g} s; the resolver is too "
            "slow or is dripping its answer: try again later or ask its operator"
        )


def _read(response: httpx.Response, max_bytes: int, url: str, deadline: Deadline) -> bytes:
    """The body, checking the deadline between chunks and refusing it past ``max_bytes``
    (counted as the bytes arrive, whatever ``Content-Length`` says)."""
    chunks: list[bytes] = []
    size = 0
    # Chunks as they arrive (not 64 KiB batches), so a drip meets the deadline.
    for chunk in response.iter_bytes():
        _check(deadline, url)
        size += len(chunk)
        if size > max_bytes:
            raise ResolverUnavailableError(
                f"{url} answered more than {max_bytes:,} bytes, more than a photoimmune "
                "resolver sends; check that the URL is where `photoimmune manifests serve` runs"
            )
        chunks.append(chunk)
    # A body that ends with its connection looks complete once the watchdog shuts that.
    _check(deadline, url)
    return b"".join(chunks)


def _raise_for(response: httpx.Response, body: bytes, url: str) -> None:
    if response.is_success:
        return
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    # Any server may answer: its detail is shown only when it is the JSON ours sends.
    detail = answer.get("detail") if isinstance(answer, dict) else None
    detail = str(detail or body.decode(errors="replace"))[:200]
    if response.status_code == 404:
        raise UnknownAssetError(f"{url}: {detail}")
    if response.status_code < 500:
        raise ResolverError(f"{url} refused the request ({response.status_code}): {detail}")
    raise ResolverUnavailableError(
        f"{url} failed ({response.status_code}); try again later or ask its operator"
    )


@contextmanager
def _translated(url: str, deadline: Deadline) -> Iterator[None]:
    """httpx's transport errors, and answers that are not a resolver's, become ours: the
    one place they are translated."""
    try:
        yield
    except httpx.HTTPError as err:
        _check(deadline, url)  # cut off by the watchdog: name the deadline, not the reset
        raise ResolverUnavailableError(
            f"cannot reach the resolver at {url} ({err}); check the URL and that "
            "`photoimmune manifests serve` runs there"
        ) from None
    except ValidationError:
        raise ResolverUnavailableError(
            f"{url} did not answer as a photoimmune resolver (its lookup is not the JSON "
            "`photoimmune manifests serve` sends); check that the URL is the address one "
            "listens on (such as http://127.0.0.1:8480), not a page or an asset's URL"
        ) from None
