"""Mutation fuzzing of the three parsers that read bytes from strangers.

* the image loader, :func:`photoimmune.sdk.io.load_image`, on mutated PNG, JPEG,
  TIFF, WebP, GIF, BMP and PPM files;
* the manifest reader, :func:`photoimmune.sdk.manifest.read_manifest`, on mutated
  signed files, the mutations aimed mostly at the embedded C2PA store;
* the registry's parse and verify path for uploaded TUF metadata
  (:func:`photoimmune.registry.service.parse_upload` and the
  :class:`~photoimmune.registry.service.RegistryService` writes), on byte-level and
  JSON-structure mutations, re-signed with the right key so that mutations reach
  the checks behind the signatures.

The property is the same for all three: every input either parses or raises a
:class:`~photoimmune.sdk.errors.PhotoimmuneError` (bad input, a clear message, exit
status 2 for images), never TypeError, MemoryError, a hang, or a traceback from
inside PIL, c2pa or python-tuf. The manifest and registry tests also check what a
successful parse promises: a ``trusted`` report is only ever given to the very
pixels that were signed, and a release the registry accepts never stops clients
from reading it.

Three ways to run them:

* the normal suite: a fixed number of examples per test, derandomized, so CI is
  bounded and repeatable;
* ``make fuzz``: ``PHOTOIMMUNE_FUZZ_EXAMPLES`` examples per test, random seeds, and
  failures kept in ``.pytest_cache/photoimmune-fuzz`` to be replayed first next time;
* coverage-guided with atheris (libFuzzer driving the same Hypothesis tests)::

      .venv/bin/python tests/test_fuzz.py image-png -max_total_time=600
      .venv/bin/python tests/test_fuzz.py --list
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import faulthandler
import functools
import io
import json
import os
import signal
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from PIL import Image

from photoimmune.sdk.errors import ImageLoadError, PhotoimmuneError
from photoimmune.sdk.io import load_image

try:
    from .helpers import FUZZ_EXAMPLES, fuzz_settings, protection, tiny_release
except ImportError:  # run as a script (atheris, below): tests/ is on sys.path
    from helpers import FUZZ_EXAMPLES, fuzz_settings, protection, tiny_release

if TYPE_CHECKING:
    from photoimmune.registry.service import RegistryService

# -- how long and how hard ----------------------------------------------------------------

#: Seconds one example may take before it counts as a hang (Python-level code).
EXAMPLE_TIMEOUT_S = float(os.environ.get("PHOTOIMMUNE_FUZZ_TIMEOUT_S", "20"))
#: Seconds after which a hang inside C code (which the alarm can't interrupt) ends the
#: process with every thread's traceback, rather than stalling CI for its whole budget.
HARD_HANG_S = 10 * EXAMPLE_TIMEOUT_S
#: Pixel limit while fuzzing in CI: mutated headers often declare tens of megapixels,
#: and the decoders' paths are the same at any size. ``make fuzz`` uses the default.
CI_MAX_PIXELS = 1 << 20
MAX_MUTATIONS = 4


class HangError(AssertionError):
    """An example ran past :data:`EXAMPLE_TIMEOUT_S`: a parser that can be made to spin."""


@contextlib.contextmanager
def watchdog(seconds: float = EXAMPLE_TIMEOUT_S) -> Iterator[None]:
    """Fail an example that runs too long, instead of letting it hang the suite.

    An interval timer raises :class:`HangError` in Python code; a loop inside a C decoder
    never returns to Python, so faulthandler ends the process after
    :data:`HARD_HANG_S` with a traceback naming the stuck call.
    """
    if not hasattr(signal, "setitimer"):  # pragma: no cover - not POSIX
        yield
        return

    def _expired(_signum, _frame):
        raise HangError(f"an example ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(HARD_HANG_S, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _built_before_drawing(request) -> None:
    """Build keys, signed seeds and the registry before Hypothesis draws anything.

    Building them uses the ``random`` module (temporary names), which Hypothesis
    rightly distrusts inside a strategy; afterwards the seeds are fixed.
    """
    name = request.node.name
    if "manifest" in name or "signed" in name:
        _signed_files()
    if any(word in name for word in ("tuf", "registry", "metadata")):
        fuzz_registry()


# -- mutations ----------------------------------------------------------------------------

_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)
_INTERESTING_INTS = (
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)


def _position(draw, data: bytearray, region: tuple[int, int] | None, *, end: bool = False) -> int:
    """An offset into ``data``: inside ``region`` (the part under test) three times in four."""
    top = len(data) if end else max(len(data) - 1, 0)
    if region is not None and region[0] < min(region[1], top) and draw(st.integers(0, 3)):
        return draw(st.integers(region[0], min(region[1], top)))
    return draw(st.integers(0, top))


def _flip(draw, data: bytearray, region, _pool) -> None:
    if data:
        data[_position(draw, data, region)] ^= draw(st.integers(1, 255))


def _set_byte(draw, data: bytearray, region, _pool) -> None:
    if data:
        data[_position(draw, data, region)] = draw(st.sampled_from(_INTERESTING_BYTES))


def _set_int(draw, data: bytearray, region, _pool) -> None:
    """Overwrite a 16- or 32-bit field (a length, a dimension, an offset) with an edge value."""
    width = draw(st.sampled_from((2, 4)))
    if len(data) < width:
        return
    at = min(_position(draw, data, region), len(data) - width)
    value = draw(st.sampled_from(_INTERESTING_INTS)) & ((1 << (8 * width)) - 1)
    order = draw(st.sampled_from(("big", "little")))
    data[at : at + width] = value.to_bytes(width, order)


def _insert(draw, data: bytearray, region, _pool) -> None:
    at = _position(draw, data, region, end=True)
    data[at:at] = draw(st.binary(min_size=1, max_size=32))


def _delete(draw, data: bytearray, region, _pool) -> None:
    if data:
        at = _position(draw, data, region)
        del data[at : at + draw(st.integers(1, 64))]


def _duplicate(draw, data: bytearray, region, _pool) -> None:
    """Copy a span elsewhere: repeated chunks, segments and IFD entries."""
    if data:
        start = _position(draw, data, region)
        span = bytes(data[start : start + draw(st.integers(1, 256))])
        at = _position(draw, data, region, end=True)
        data[at:at] = span


def _truncate(draw, data: bytearray, region, _pool) -> None:
    if data:
        del data[_position(draw, data, region) :]


def _splice(draw, data: bytearray, region, pool) -> None:
    """This file's head on another seed's tail: a valid header over foreign data."""
    other = draw(st.sampled_from(pool))
    if data and other:
        cut = _position(draw, data, region)
        data[cut:] = other[draw(st.integers(0, len(other) - 1)) :]


MUTATIONS = (_flip, _set_byte, _set_int, _insert, _delete, _duplicate, _truncate, _splice)


@st.composite
def mutated(
    draw, seeds: Callable[[], dict[str, bytes]], regions: Callable[[], dict[str, tuple]] = dict
) -> bytes:
    """A seed file with one to :data:`MAX_MUTATIONS` mutations, PNG CRCs repaired or not.

    ``seeds`` and ``regions`` are called at draw time, so that building them (keys,
    signing) costs nothing at import and nothing when the tests are deselected.
    """
    pool = seeds()
    name = draw(st.sampled_from(sorted(pool)))
    data = bytearray(pool[name])
    region = regions().get(name)
    for _ in range(draw(st.integers(1, MAX_MUTATIONS))):
        draw(st.sampled_from(MUTATIONS))(draw, data, region, list(pool.values()))
    if data.startswith(PNG_MAGIC) and draw(st.booleans()):
        fix_png_crcs(data)  # a CRC mismatch stops PIL early; a real attacker fixes it
    return bytes(data)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fix_png_crcs(data: bytearray) -> None:
    """Recompute every complete PNG chunk's CRC in place, so mutations reach the decoder."""
    pos = len(PNG_MAGIC)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        data[end : end + 4] = struct.pack(">I", zlib.crc32(data[pos + 4 : end]))
        pos = end + 4


def changed_region(before: bytes, after: bytes) -> tuple[int, int]:
    """The span of ``after`` that differs from ``before``: where signing put the manifest."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    return start, len(after) - end


# -- 1. the image loader ------------------------------------------------------------------


def _picture(width: int = 12, height: int = 9) -> Image.Image:
    """A small picture with edges and gradients, so every encoder writes real data."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x ^ y) * 16 % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _with_orientation(img: Image.Image, orientation: int = 6) -> Image.Exif:
    exif = img.getexif()
    exif[0x0112] = orientation
    return exif


def _png_seeds(img: Image.Image) -> dict[str, bytes]:
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    gray16 = Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257).astype(np.uint16))
    frames = [img, img.rotate(90, expand=False)]
    return {
        "png-rgb": _encode(img, "PNG"),
        "png-rgba": _encode(img.convert("RGBA"), "PNG"),
        "png-palette-transparent": _encode(palette, "PNG", transparency=0),
        "png-gray16": _encode(gray16, "PNG"),
        "png-interlaced-exif": _encode(img, "PNG", interlace=1, exif=_with_orientation(img)),
        "apng": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
    }


def _jpeg_seeds(img: Image.Image) -> dict[str, bytes]:
    return {
        "jpeg-baseline": _encode(img, "JPEG", quality=90),
        "jpeg-progressive": _encode(img, "JPEG", progressive=True, quality=75),
        "jpeg-gray-exif": _encode(img.convert("L"), "JPEG", exif=_with_orientation(img, 3)),
        "jpeg-cmyk": _encode(img.convert("CMYK"), "JPEG"),
    }


#: Files the hardening tests keep as fixtures (issue 30 #6's crafted TIFF): good seeds too.
FIXTURES = Path(__file__).parent / "data"


def _fixture_seeds(*suffixes: str) -> dict[str, bytes]:
    """Fixture files with these suffixes, if the checkout has them (never required)."""
    found = sorted(FIXTURES.glob("*")) if FIXTURES.is_dir() else []
    return {f"fixture-{p.name}": p.read_bytes() for p in found if p.suffix.lower() in suffixes}


def _tiff_seeds(img: Image.Image) -> dict[str, bytes]:
    return {
        **_fixture_seeds(".tif", ".tiff"),
        "tiff-raw": _encode(img, "TIFF"),
        "tiff-lzw": _encode(img, "TIFF", compression="tiff_lzw"),
        "tiff-packbits-rgba": _encode(img.convert("RGBA"), "TIFF", compression="packbits"),
        # Several frames: issue 30 #6 (TypeError from n_frames) was a multi-frame TIFF.
        "tiff-pages": _encode(img, "TIFF", save_all=True, append_images=[img.convert("L")]),
        "tiff-exif": _encode(img, "TIFF", exif=_with_orientation(img, 8)),
    }


def _webp_seeds(img: Image.Image) -> dict[str, bytes]:
    return {
        "webp-lossy": _encode(img, "WEBP", quality=80),
        "webp-lossless-alpha": _encode(img.convert("RGBA"), "WEBP", lossless=True),
        "webp-animated": _encode(img, "WEBP", save_all=True, append_images=[img.rotate(180)]),
    }


def _gif_seeds(img: Image.Image) -> dict[str, bytes]:
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "gif": _encode(palette, "GIF"),
        "gif-transparent": _encode(palette, "GIF", transparency=1),
        "gif-animated": _encode(
            palette, "GIF", save_all=True, append_images=[palette.rotate(90)], loop=0
        ),
    }


def _other_seeds(img: Image.Image) -> dict[str, bytes]:
    return {
        "bmp": _encode(img, "BMP"),
        "bmp-rle8": _encode(img.convert("P"), "BMP"),
        "ppm": _encode(img, "PPM"),
        "pgm": _encode(img.convert("L"), "PPM"),
    }


IMAGE_FAMILIES = {
    "png": _png_seeds,
    "jpeg": _jpeg_seeds,
    "tiff": _tiff_seeds,
    "webp": _webp_seeds,
    "gif": _gif_seeds,
    "other": _other_seeds,
}


@functools.cache
def image_seeds(family: str) -> dict[str, bytes]:
    """Valid small files of one family: the starting points the mutations damage."""
    return IMAGE_FAMILIES[family](_picture())


def fuzz_max_pixels() -> int:
    from photoimmune.sdk.io import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS if FUZZ_EXAMPLES else CI_MAX_PIXELS


def check_load(data: bytes) -> None:
    """The loader's promise: RGB uint8 pixels within the limit, or an ImageLoadError."""
    note(f"input, {len(data)} bytes: {data!r}")  # printed for the failing example only
    limit = fuzz_max_pixels()
    image = refusal = None
    with watchdog(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF; only errors matter
        try:
            image = load_image(data, max_pixels=limit)
        except PhotoimmuneError as err:
            refusal = err
    if refusal is not None:
        event("refused")
        assert isinstance(refusal, ImageLoadError) and refusal.exit_code == 2, repr(refusal)
        assert str(refusal).startswith("<bytes>: "), str(refusal)  # names what it refuses
        return
    event("loaded")
    pixels = image.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert 0 < pixels.shape[0] * pixels.shape[1] <= limit
    assert not pixels.flags.writeable


def _loader_test(family: str, examples: int) -> Callable:
    @fuzz_settings(examples)
    @given(data=mutated(functools.partial(image_seeds, family)))
    def test(data: bytes) -> None:
        check_load(data)

    test.__doc__ = f"Mutated {family} files load or raise ImageLoadError."
    return test


test_load_image_on_mutated_png = _loader_test("png", 400)
test_load_image_on_mutated_jpeg = _loader_test("jpeg", 300)
test_load_image_on_mutated_tiff = _loader_test("tiff", 500)
test_load_image_on_mutated_webp = _loader_test("webp", 300)
test_load_image_on_mutated_gif = _loader_test("gif", 300)
test_load_image_on_mutated_bmp_and_ppm = _loader_test("other", 200)


def test_the_seeds_are_valid_images():
    """A mutation fuzzer is only as good as its seeds: each must load before it is damaged."""
    for family in IMAGE_FAMILIES:
        for name, data in image_seeds(family).items():
            if not name.startswith("fixture-"):  # fixtures may be crafted to fail
                assert load_image(data).pixels.size, name


# -- 2. the manifest reader ---------------------------------------------------------------


def _scratch(prefix: str) -> Path:
    """A temporary folder for the whole process (fixtures can't outlive a test), removed
    at exit."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def _manifest_keys():
    """Development keys in a folder that lives as long as the process."""
    from photoimmune.sdk.keys import init_keys

    folder = _scratch("photoimmune-fuzz-keys-")
    return init_keys(Path(folder) / "keys")


@functools.cache
def _signed_files() -> tuple[dict[str, bytes], dict[str, tuple[int, int]]]:
    """Signed PNG, JPEG and WebP files (one with a signed parent), and where each manifest is."""
    from photoimmune.sdk.manifest import sign_image

    signer = _manifest_keys().signer()
    img = _picture(16, 16)
    plain = {fmt: _encode(img, fmt.upper()) for fmt in ("png", "jpeg", "webp")}
    signed = {fmt: sign_image(data, [protection()], signer) for fmt, data in plain.items()}
    # A second round on top of the first: a parentOf ingredient with its own manifest.
    signed["png-edited"] = sign_image(plain["png"], [protection()], signer, parent=signed["png"])
    regions = {
        name: changed_region(plain[name.split("-")[0]], data) for name, data in signed.items()
    }
    return signed, regions


def manifest_seeds() -> dict[str, bytes]:
    return _signed_files()[0]


def manifest_regions() -> dict[str, tuple[int, int]]:
    return _signed_files()[1]


@functools.cache
def signed_pixels() -> list[np.ndarray]:
    """The pixels each seed was signed over: the only pixels a manifest may call trusted."""
    return [load_image(data).pixels for data in manifest_seeds().values()]


def check_manifest(data: bytes, decode: bool = True) -> None:
    """The reader's promise: a verdict, or a PhotoimmuneError; ``trusted`` only for signed pixels.

    With ``decode=False`` the caller hands over the pixels (as ``load_image(verify=True)``
    does), so c2pa sees even files that Pillow would have refused first.
    """
    from photoimmune.sdk.manifest import Verdict, read_manifest

    note(f"input, {len(data)} bytes: {data!r}")
    trust = _manifest_keys().trust_anchor_pem()
    pixels = None if decode else signed_pixels()[0]
    with watchdog(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            report = read_manifest(data, trust=trust, pixels=pixels)
        except PhotoimmuneError as err:
            event(f"refused: {type(err).__name__}")
            return
    event(f"verdict: {report.verdict}")
    assert report.verdict in get_args(Verdict)
    if report.ok and decode:
        pixels = load_image(data).pixels
        assert any(np.array_equal(pixels, p) for p in signed_pixels()), "trusted, other pixels"


@fuzz_settings(300)
@given(data=mutated(manifest_seeds, manifest_regions), decode=st.booleans())
def test_read_manifest_on_mutated_signed_files(data: bytes, decode: bool) -> None:
    """Mutated signed files get a verdict or a PhotoimmuneError, never a c2pa traceback."""
    check_manifest(data, decode)


def test_the_signed_seeds_are_trusted():
    from photoimmune.sdk.manifest import read_manifest

    trust = _manifest_keys().trust_anchor_pem()
    for name, data in manifest_seeds().items():
        assert read_manifest(data, trust=trust).verdict == "trusted", name
        start, end = manifest_regions()[name]
        assert end - start > 500, name  # the region really is the manifest, not a byte or two


# -- 3. the registry's TUF metadata parser ------------------------------------------------
# The registry under test lives for the whole process; a change it accepts is undone by
# reopening a pristine copy, so examples stay independent and failures reproduce.


class FuzzRegistry:
    """A registry folder with vendor ``acme`` (one release published) and every key."""

    def __init__(self) -> None:
        from photoimmune.registry.admin import LocalRegistry, add_vendor, init_registry
        from photoimmune.registry.keys import load_signer, write_key

        self.base = _scratch("photoimmune-fuzz-registry-")
        paths = init_registry(self.base / "pristine", root_keys=1, root_threshold=1)
        self.keys = {
            role: load_signer(paths.keys / f"{role}.pem") for role in ("root-1", "targets")
        }
        self.keys["acme"] = write_key(self.base / "acme.pem")
        self.trusted_root = paths.trusted_root.read_bytes()
        service = _open_service(paths.root)
        registry = LocalRegistry(service)
        add_vendor(registry, "acme", [self.keys["acme"].public_key], 1, [self.keys["targets"]])
        release = tiny_release("acme/fuzz@1")
        registry.publish("acme", self.vendor_metadata(service, release), release)
        service.store.engine.dispose()
        self.pristine = paths.root
        self.copies = 0
        self.service = self.fresh_service()

    def fresh_service(self):
        """A service over a new copy of the pristine folder."""
        import shutil

        self.copies += 1
        folder = self.base / f"copy-{self.copies}"
        shutil.copytree(self.pristine, folder)
        return _open_service(folder)

    def reset(self) -> None:
        """Throw away whatever an accepted example changed."""
        old = self.service
        self.service = self.fresh_service()
        old.store.engine.dispose()

    def vendor_metadata(self, service, files: dict[str, bytes]) -> bytes:
        """acme's next role version listing ``files`` (a release from :func:`tiny_release`)."""
        from tuf.api.metadata import Metadata

        from photoimmune.registry import metadata as tm

        current = service.current("acme") if _has_role(service, "acme") else None
        descriptor, tensors = files.values()
        md = tm.vendor_release(
            None if current is None else Metadata.from_bytes(current),
            descriptor,
            tensors,
            tm.LIFETIMES["vendor"],
        )
        return tm.sign(md, [self.keys["acme"]])

    def folder(self) -> Path:
        return Path(self.service.store.blobs.root).parent


def _open_service(folder: Path):
    from photoimmune.registry.service import RegistryService

    return RegistryService.open(folder)


def _has_role(service, role: str) -> bool:
    from photoimmune.registry.errors import UnknownReleaseError

    try:
        service.current(role)
    except UnknownReleaseError:
        return False
    return True


@functools.cache
def fuzz_registry() -> FuzzRegistry:
    return FuzzRegistry()


#: Values a hostile document puts where the schema expects something else.
_JSON_EDGE_VALUES = st.sampled_from(
    [
        None,
        True,
        0,
        -1,
        2**31,
        2**63,
        10**30,
        "",
        "..",
        "acme/%2e%2e/x/y",
        "acme/../evil/x/y",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "not a date",
        "\u202e\ufeff",
        "a" * 4096,
        [],
        {},
        [[[[[[[[[[]]]]]]]]]],
    ]
).map(copy.deepcopy)  # never hand out the shared list or dict itself: a mutation would keep it
#: Raw JSON tokens that ``json.dumps`` never writes but ``json.loads`` reads.
_RAW_TOKENS = ("NaN", "-Infinity", "1e999", "-0", "0.5", "1" + "0" * 400, '"\\ud800"')
_RAW = "\x00raw\x00"


def _json_values() -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=16)
    arbitrary = st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    return _JSON_EDGE_VALUES | arbitrary


def _paths(node, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a node of a JSON document (keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate_json(draw, document: dict) -> tuple[dict, str | None]:
    """One structural change: a value replaced, a key deleted or added, or a raw token."""
    paths = list(_paths(document))[1:]
    if not paths:  # everything was deleted already
        return document, None
    path = draw(st.sampled_from(paths))
    *parent_path, last = path
    parent = document
    for step in parent_path:
        parent = parent[step]
    action = draw(st.sampled_from(("tweak", "tweak", "tweak", "replace", "delete", "add", "raw")))
    raw = None
    if action == "tweak":
        parent[last] = _tweaked(draw, parent[last])
    elif action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=12))] = draw(_json_values())
    elif action == "raw":
        raw = draw(st.sampled_from(_RAW_TOKENS))
        parent[last] = _RAW
    else:
        parent[last] = draw(_json_values())
    return document, raw


_EDGE_INTS = (0, 1, -1, 2, 2**31 - 1, 2**31, 2**53 + 1, 2**64)


def _tweaked(draw, value):
    """``value`` changed but kept of its type, so the schema still holds and deeper
    checks (versions, thresholds, paths, hashes, lengths, dates) see the change."""
    if isinstance(value, bool) or value is None:
        return not value
    if isinstance(value, int):
        return draw(st.sampled_from((*_EDGE_INTS, value + 1, value - 1, -value)))
    if isinstance(value, str):
        at = draw(st.integers(0, len(value)))
        piece = draw(st.sampled_from(("", "/", "..", "%2e", "*", "\x00", "Z", "0", "é")))
        return value[:at] + piece + value[at + draw(st.integers(0, 3)) :]
    if isinstance(value, list):
        return value + value[:1] if draw(st.booleans()) else value[1:]
    copied = dict(value)
    if copied and draw(st.booleans()):
        del copied[draw(st.sampled_from(sorted(copied)))]
    else:
        copied[draw(st.sampled_from(("custom", "x-extra", "length", "")))] = draw(_json_values())
    return copied


def _dump(document: dict, raw: str | None) -> bytes:
    text = json.dumps(document, sort_keys=True)
    if raw is not None:
        text = text.replace(json.dumps(_RAW), raw)
    return text.encode()


def _resigned(document_bytes: bytes, signer) -> bytes:
    """The document validly signed by ``signer``, if python-tuf can still read it.

    A mutation behind a broken signature stops at the first check; re-signing with the
    key the registry expects is what a hostile vendor (or a stolen key) does, and it
    carries the mutation to the checks behind the signature.
    """
    from tuf.api.metadata import Metadata

    from photoimmune.registry import metadata as tm

    try:
        md = Metadata.from_bytes(document_bytes)
        return tm.sign(md, [signer])
    except Exception:  # the registry's parser must refuse this one anyway
        return document_bytes


@st.composite
def mutated_metadata(draw, seed: Callable[[], bytes], signer: Callable[[], object] | None):
    """Signed metadata with JSON-structure mutations (re-signed or not), then byte mutations."""
    data = seed()
    document = json.loads(data)
    raw = None
    for _ in range(draw(st.integers(0, 3))):
        if raw is None:
            document, raw = _mutate_json(draw, document)
    data = _dump(document, raw)
    if signer is not None and raw is None and draw(st.integers(0, 3)):
        data = _resigned(data, signer())
    if draw(st.integers(0, 3)) == 0:  # sometimes byte-level damage on top
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, MAX_MUTATIONS))):
            draw(st.sampled_from(MUTATIONS))(draw, buffer, None, [data])
        data = bytes(buffer)
    return data


def _role_seed(role: str) -> Callable[[], bytes]:
    return lambda: fuzz_registry().service.current(role)


def _next_release_seed() -> bytes:
    """acme's role with a second release added: what an honest publish would upload."""
    registry = fuzz_registry()
    return registry.vendor_metadata(registry.service, tiny_release("acme/fuzz@2"))


def _next_version_seed(role: str) -> Callable[[], bytes]:
    """``role``'s current metadata as its next version, validly signed: an honest update."""

    def seed() -> bytes:
        from tuf.api.metadata import Metadata

        from photoimmune.registry import metadata as tm

        registry = fuzz_registry()
        md = Metadata.from_bytes(registry.service.current(role))
        md.signed.version += 1
        md.signed.expires = tm.expiry(tm.LIFETIMES[role])
        return tm.sign(md, [registry.keys["root-1" if role == "root" else role]])

    return seed


def _key(name: str) -> Callable[[], object]:
    return lambda: fuzz_registry().keys[name]


_REASONS = (
    "not TUF metadata",
    "expected",
    "not the next version",
    "not signed by enough",
    "expires",
    "outside",
    "exactly one hash",
    "do not match",
    "not listed",
    "neither uploaded nor stored",
    "not a valid attack target",
    "descriptor differs",
    "does not live at this path",
    "lists no files",
    "canonical-JSON-serialisable",
)


def _reason(message: str) -> str:
    """Which check refused an upload, for the statistics: how deep the fuzzer got."""
    return next((reason for reason in _REASONS if reason in message), "other")


def check_rejected_or_accepted(call: Callable[[], object]) -> bool:
    """Run a registry write: it returns or raises a PhotoimmuneError; True if it accepted."""
    with watchdog():
        try:
            call()
        except PhotoimmuneError as err:
            event(f"refused: {_reason(str(err))}")
            return False
    event("accepted")
    return True


def check_registry_write(
    write: Callable[[RegistryService], object], check: Callable[[FuzzRegistry], None]
) -> None:
    """A write to the fuzz registry returns or raises a PhotoimmuneError; one it accepts
    must pass ``check``, and is undone whatever happens."""
    registry = fuzz_registry()
    if check_rejected_or_accepted(lambda: write(registry.service)):
        try:
            check(registry)
        finally:
            registry.reset()


def check_registry_answers(registry: FuzzRegistry) -> None:
    """After a write to top-level metadata, the registry still serves its timestamp."""
    registry.service.metadata_file("timestamp.json")


def check_registry_still_serves(registry: FuzzRegistry) -> None:
    """After any write, the registry still answers reads, and clients still verify them."""
    import shutil

    from photoimmune.registry.client import RegistryClient

    registry.service.metadata_file("timestamp.json")
    cache = Path(tempfile.mkdtemp(prefix="photoimmune-fuzz-cache-"))
    try:
        client = RegistryClient(
            registry.folder(), trusted_root=registry.trusted_root, cache_dir=cache
        )
        releases = client.releases()
        assert all(str(ref).startswith("acme/") for ref in releases), releases
    finally:
        shutil.rmtree(cache, ignore_errors=True)


ROLE_TYPES = {
    "root": "root",
    "targets": "targets",
    "snapshot": "snapshot",
    "timestamp": "timestamp",
}


@fuzz_settings(300)
@given(
    role=st.sampled_from(["root", "targets", "snapshot", "timestamp", "acme"]),
    data=st.data(),
)
def test_tuf_parse_on_mutated_metadata(role: str, data) -> None:
    """The upload parser returns metadata of the expected type or a ReleaseRejectedError."""
    from photoimmune.registry.errors import ReleaseRejectedError
    from photoimmune.registry.service import parse_upload

    document = data.draw(mutated_metadata(_role_seed(role), None), label="document")
    expected = ROLE_TYPES.get(role, "targets")
    with watchdog():
        try:
            md = parse_upload(document, expected)
        except ReleaseRejectedError as err:
            event(f"refused: {_reason(str(err))}")
            return
    event("parsed")
    assert md.signed.type == expected
    # Every later check verifies signatures over the canonical form: it must exist.
    assert md.signed_bytes


@pytest.mark.parametrize("token", ["0.5", "NaN", "-Infinity", "1e999", '"\\ud800"'])
def test_metadata_that_cannot_be_canonicalised_is_refused(token: str) -> None:
    """Found by the fuzzers: JSON that parses but has no canonical form, so no signature
    can cover it, was a SerializationError (a 500 for anyone posting it), not a refusal."""
    from photoimmune.registry.errors import ReleaseRejectedError

    registry = fuzz_registry()
    for seed, write in (
        (_next_version_seed("root"), registry.service.update_root),
        (_next_version_seed("targets"), registry.service.update_targets),
        (_next_release_seed, lambda data: registry.service.publish("acme", data, {})),
    ):
        document = json.loads(seed())
        document["signed"]["x-extra"] = _RAW
        with pytest.raises(ReleaseRejectedError, match="canonical-JSON-serialisable"):
            write(_dump(document, token))


@fuzz_settings(150)
@given(
    document=mutated_metadata(_next_release_seed, _key("acme")),
    file_edit=st.sampled_from(["none", "drop", "damage", "extra", "rename"]),
)
def test_registry_publish_on_mutated_vendor_metadata(document: bytes, file_edit: str) -> None:
    """A vendor's hostile upload is refused cleanly; one accepted leaves clients working."""
    note(f"document: {document!r}")
    files = _edited_files(tiny_release("acme/fuzz@2"), file_edit)
    check_registry_write(
        lambda service: service.publish("acme", document, files), check_registry_still_serves
    )


def _edited_files(files: dict[str, bytes], edit: str) -> dict[str, bytes]:
    """The release's files, with one file dropped, damaged, added or moved."""
    first = next(iter(files))
    if edit == "drop":
        return {k: v for k, v in files.items() if k != first}
    if edit == "damage":
        return {**files, first: files[first][:-1] + b"!"}
    if edit == "extra":
        return {**files, "acme/fuzz/2/extra.bin": b"x"}
    if edit == "rename":
        return {k.replace("acme/", "acme/../other/", 1): v for k, v in files.items()}
    return files


@fuzz_settings(100)
@given(document=mutated_metadata(_next_version_seed("targets"), _key("targets")))
def test_registry_update_targets_on_mutated_targets(document: bytes) -> None:
    """New top-level targets, mutated and re-signed: accepted or refused, never a crash."""
    note(f"document: {document!r}")
    check_registry_write(lambda service: service.update_targets(document), check_registry_answers)


@fuzz_settings(100)
@given(document=mutated_metadata(_next_version_seed("root"), _key("root-1")))
def test_registry_update_root_on_mutated_root(document: bytes) -> None:
    """A new root, mutated and re-signed by the root key: accepted or refused, never a crash."""
    note(f"document: {document!r}")
    check_registry_write(lambda service: service.update_root(document), check_registry_answers)


def test_the_tuf_seeds_are_accepted():
    """Unmutated, each seed is an honest change the registry takes (then undone)."""
    registry = fuzz_registry()
    for call in (
        lambda: registry.service.publish("acme", _next_release_seed(), tiny_release("acme/fuzz@2")),
        lambda: registry.service.update_targets(_next_version_seed("targets")()),
        lambda: registry.service.update_root(_next_version_seed("root")()),
    ):
        assert isinstance(call(), int)
        check_registry_still_serves(registry)
        registry.reset()


# -- coverage-guided runs (atheris) -------------------------------------------------------


def fuzz_targets() -> dict[str, Callable]:
    """Each Hypothesis test above, by a short name for the command line."""
    return {
        name.removeprefix("test_").replace("_", "-"): test
        for name, test in globals().items()
        if name.startswith("test_") and hasattr(getattr(test, "hypothesis", None), "fuzz_one_input")
    }


#: Packages whose Python code guides the coverage-guided runs.
INSTRUMENTED = ("PIL", "photoimmune", "tuf", "securesystemslib")


def _instrument(atheris, packages: tuple[str, ...]) -> None:
    """Instrument the loaded functions of ``packages`` only.

    ``atheris.instrument_all()`` would also patch torch (imported for the registry's
    releases), which takes many minutes and guides nothing of interest.
    """
    import gc
    import types

    for obj in gc.get_objects():
        if (
            isinstance(obj, types.FunctionType)
            and isinstance(obj.__module__, str)
            and obj.__module__.split(".")[0] in packages
        ):
            with contextlib.suppress(Exception):  # some can't be patched; they go uncounted
                atheris.instrument_func(obj)


def atheris_main(argv: list[str]) -> None:
    """libFuzzer mutates Hypothesis's choice sequence, guided by coverage of PIL's Python
    plugins, photoimmune and python-tuf (c2pa and Pillow's C decoders are not instrumented).

    ``--list`` prints the targets, one a line (the Makefile's ``fuzz`` loops over them).
    """
    targets = fuzz_targets()
    if argv[1:2] == ["--list"]:
        print("\n".join(sorted(targets)))
        return
    if len(argv) < 2 or argv[1] not in targets:
        raise SystemExit(f"usage: {argv[0]} TARGET [libFuzzer options]; TARGET: --list shows")
    import atheris

    test = targets[argv[1]]
    Image.init()  # import every Pillow plugin now, so that it gets instrumented
    if "manifest" in argv[1]:
        _signed_files()
    if "image" not in argv[1]:
        fuzz_registry()
    _instrument(atheris, INSTRUMENTED)
    atheris.Setup([argv[0], *argv[2:]], test.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    atheris_main(sys.argv)
