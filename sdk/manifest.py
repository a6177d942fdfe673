"""Signed C2PA manifests: write them into immunized images, read and judge them.

:func:`sign_image` embeds a manifest carrying an
:class:`~photoimmune.sdk.assertion.ImmunizationAssertion` into PNG, JPEG or WebP
bytes with c2pa-python; the pixels are not touched and no thumbnail is added.
When the image was made from another one (``parent``), that file becomes the
manifest's ``parentOf`` ingredient (intent EDIT): if the parent carried a
manifest of its own, it is kept inside the new one, so every earlier round of
immunization can be read back with :func:`read_manifest`. A parent that can't be
attached (a format c2pa takes no ingredient from, or one it fails to read) is left
out, with a logged warning when it failed: the image is signed without it rather
than losing the work that made it.

:func:`read_manifest` returns a :class:`ManifestReport` with one *verdict*,
checked in this order (the first that applies wins):

``missing``        no C2PA data at all (never signed, or stripped by a plain re-save)
``not_immunized``  a C2PA manifest, but without the immunization assertion
``invalid``        the manifest itself was altered: a signature or hash inside it fails
``transplanted``   the manifest describes a different picture (copied from another file)
``modified``       the picture was changed after signing (even one pixel)
``expired``        the signing certificate has expired
``untrusted``      intact, but signed by a CA the reader does not trust
``trusted``        intact, pixel-bound and signed under a trusted CA

Only ``trusted`` counts as protected (:attr:`ManifestReport.ok`).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from .assertion import ASSERTION_LABEL, ImmunizationAssertion
from .codec import decode_image, encode_image
from .errors import InputError, ManifestError
from .protection import Protection
from .softbinding import (
    SOFT_BINDING_LABEL,
    BoundCode,
    binding_codes,
    codes_of_assertion,
    soft_binding_assertion,
)
from .trust import TrustFiles, read_trust_anchors

if TYPE_CHECKING:  # annotations only: keys writes through io, which sits above this module
    from .keys import ManifestSigner

Verdict = Literal[
    "missing",
    "not_immunized",
    "invalid",
    "transplanted",
    "modified",
    "expired",
    "untrusted",
    "trusted",
]
#: What ``trust=`` takes: PEM bytes or text, a CA file's path, or a list of them
#: (:func:`~photoimmune.sdk.trust.read_trust_anchors`, as the plugin's ``trust=``).
TrustAnchors: TypeAlias = TrustFiles | None
#: The types a file's bytes come in.
_BYTES = (bytes, bytearray, memoryview)
logger = logging.getLogger(__name__)

#: The C2PA assertion that lists how an asset was made (created, opened, edited...).
ACTIONS_LABEL = "c2pa.actions.v2"
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Failure codes that concern the asset's bytes or the certificate, not the manifest's integrity.
_ASSET_CODES = {"assertion.dataHash.mismatch", "assertion.boxesHash.mismatch"}
_TRUST_CODES = {"signingCredential.untrusted", "signingCredential.expired"}
# Formats c2pa reads manifests from (a never-signed BMP or PPM is "missing", not "invalid").
_C2PA_CONTAINERS = {"PNG", "JPEG", "WEBP", "GIF", "TIFF"}
_EXPLANATIONS: dict[Verdict, str] = {
    "missing": "no C2PA manifest; the image was never signed, or a re-save stripped it",
    "not_immunized": "a C2PA manifest without an immunization assertion; not protected by us",
    "invalid": "the manifest was altered after signing; do not rely on it",
    "transplanted": "the manifest was made for a different picture; it says nothing about this one",
    "modified": "the picture was changed after signing; re-immunize the original",
    "expired": "the signing certificate has expired; ask the signer to re-sign with a valid one",
    "untrusted": "intact, but its CA is not in your trust anchors; pass --trust CA.pem to trust it",
    "trusted": "intact, bound to these pixels, and signed under a trusted CA",
}


class ManifestReport(BaseModel):
    """What an image's manifest says, and whether to believe it.

    Example:
        >>> report = read_manifest(open("cat.png", "rb").read(), trust=ca_pem)  # doctest: +SKIP
        >>> report.verdict, [p.target_ref for p in report.assertion.protections]  # doctest: +SKIP
        ('trusted', ['photoimmune/tiny-ldm@1'])
    """

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    explanation: str
    validation_state: str | None = None
    failures: tuple[str, ...] = ()
    signer: str | None = None
    pixel_bound: bool = False
    assertion: ImmunizationAssertion | None = None
    history: tuple[ImmunizationAssertion, ...] = ()
    soft_binding: tuple[BoundCode, ...] = ()
    digital_source_type: str | None = None

    @property
    def present(self) -> bool:
        return self.verdict != "missing"

    @property
    def trusted(self) -> bool:
        return self.verdict == "trusted"

    @property
    def ok(self) -> bool:
        """True only for an intact, trusted manifest bound to these very pixels."""
        return self.verdict == "trusted"

    @property
    def protected_against(self) -> tuple[str, ...]:
        """Target refs along the manifest chain, oldest first, each once."""
        refs = (p.target_ref for a in self.history for p in a.protections)
        return tuple(dict.fromkeys(refs))

    def covers(self, target_ref: str, target_digest: str | None = None) -> bool:
        """Whether a trusted manifest says these pixels are protected against ``target_ref``
        (and, when given, against the target whose digest is ``target_digest``)."""
        return (
            self.ok
            and self.assertion is not None
            and self.assertion.covers(target_ref, target_digest)
        )

    def covers_any(self, target_digests: Sequence[str]) -> bool:
        """Whether a trusted manifest says these pixels are protected against one of the
        targets ``target_digests`` names (e.g. those a cooperative release honours)."""
        return (
            self.ok
            and self.assertion is not None
            and any(p.target_digest in target_digests for p in self.assertion.protections)
        )


def sign_image(
    data: bytes,
    protections: Sequence[Protection],
    signer: ManifestSigner,
    *,
    parent: bytes | None = None,
    title: str | None = None,
) -> bytes:
    """Return ``data`` (PNG, JPEG or WebP bytes) with a signed immunization manifest.

    Args:
        data: the immunized file's bytes; its pixels are hashed into the assertion.
        protections: what was done to the image (``ImmunizationResult.protections``): a
            non-empty list of :class:`Protection` records.
        signer: the key and certificate chain that sign (see :mod:`~photoimmune.sdk.keys`),
            e.g. ``KeyDir(...).signer("publisher")``.
        parent: the original file's bytes, kept as the ``parentOf`` ingredient (with
            its own manifest, if any). Default: None, no parent.
        title: the manifest's title. Default: None, ``"immunized.<format>"``.

    Raises:
        InputError: ``data`` is not PNG, JPEG or WebP bytes, or an argument is not what
            it says above (no protection at all, a signer that is none, a parent path
            instead of its bytes...).
        ManifestError: signing failed (a key that does not match its certificate...).

    Example:
        >>> signed = sign_image(png_bytes, result.protections, keys.signer())  # doctest: +SKIP
        >>> read_manifest(signed, trust=keys.trust_anchor_pem()).verdict  # doctest: +SKIP
        'trusted'
    """
    import c2pa

    from . import __version__

    _check_file_bytes(data, "data", "sign")
    _check_signing(protections, signer, parent, title)
    data = bytes(data)
    image = decode_image(data)
    mime = _mime_type(image.format)
    assertion = ImmunizationAssertion.for_pixels(
        image.pixels, tuple(protections), f"photoimmune {__version__}"
    )
    definition = {
        "claim_generator_info": [{"name": "photoimmune", "version": __version__}],
        "title": title or f"immunized.{mime.split('/')[1]}",
        "assertions": [
            {"label": ASSERTION_LABEL, "data": assertion.model_dump(mode="json")},
            # Finds this manifest again once a re-save has stripped it (sdk/softbinding.py).
            {
                "label": SOFT_BINDING_LABEL,
                "data": soft_binding_assertion(binding_codes(image.pixels)),
            },
        ],
    }
    parent_mime = _ingredient_mime(parent)
    if parent is not None and parent_mime is not None:
        try:
            return _sign(definition, signer, mime, data, (parent_mime, parent))
        except c2pa.C2paError as err:
            # The parent only adds history: the immunization is done and the new
            # manifest speaks for these pixels alone, so signing without it beats
            # failing the work (a pipeline call, a job). The fallback signs afresh: a
            # fault of the key or certificate fails it too, and is reported as such.
            signed = _signed_or_error(definition, signer, mime, data)
            logger.warning(
                "%s: the parent image could not be attached as an ingredient (%s); signed "
                "without it, so the earlier manifests are not kept in this one",
                definition["title"],
                err,
            )
            return signed
    return _signed_or_error(definition, signer, mime, data)


def _check_signing(protections: object, signer: object, parent: object, title: object) -> None:
    """Refuse what :func:`sign_image` cannot sign with, before any work: a manifest that
    says "immunized" must name at least one protection."""
    if not isinstance(protections, list | tuple) or not protections:
        what = (
            "an empty list"
            if isinstance(protections, list | tuple)
            else "a " + type(protections).__name__
        )
        raise InputError(
            f"protections: got {what}; give a non-empty list of Protection records, such as "
            "ImmunizationResult.protections or [protection]: a manifest without one would "
            "call the image immunized against nothing"
        )
    for item in protections:
        if not isinstance(item, Protection):
            raise InputError(
                f"protections: {type(item).__name__} {item!r:.60} is not a Protection; build "
                "one with Protection.model_validate(record)"
            )
    # Tested by what signing uses: ManifestSigner lives in keys, above this module.
    if not callable(getattr(signer, "to_c2pa", None)):
        is_key_dir = hasattr(signer, "signer") and hasattr(signer, "ca_cert")
        hint = 'keys.signer("publisher")' if is_key_dir else "KeyDir(path).signer()"
        raise InputError(
            f"signer: got a {type(signer).__name__}; give a ManifestSigner, e.g. {hint}"
        )
    if parent is not None:
        _check_file_bytes(parent, "parent", "keep as the parent")
    if title is not None and not isinstance(title, str):
        raise InputError(f"title={title!r}: give the manifest's title as text, or None")


def _check_file_bytes(data: object, name: str, verb: str) -> None:
    """Refuse anything but a file's bytes (a path names a file, it is not one)."""
    if not isinstance(data, _BYTES):
        raise InputError(
            f"{name}: got a {type(data).__name__}; give the image file's bytes to {verb} "
            "(for a file, Path(name).read_bytes())"
        )


def _signed_or_error(definition: dict, signer: ManifestSigner, mime: str, data: bytes) -> bytes:
    """``data`` signed without a parent, or :class:`ManifestError` saying what to check."""
    import c2pa

    try:
        return _sign(definition, signer, mime, data, None)
    except c2pa.C2paError as err:
        raise ManifestError(
            f"signing failed ({err}); check that the key matches its certificate and "
            "that the certificate is a valid end-entity signing certificate"
        ) from None


def _sign(
    definition: dict,
    signer: ManifestSigner,
    mime: str,
    data: bytes,
    parent: tuple[str, bytes] | None,
    *,
    parent_title: str = "original",
) -> bytes:
    """c2pa's signing: intent EDIT with ``parent`` (MIME type, bytes) as its ``parentOf``
    ingredient; without one, intent CREATE, unless ``definition`` brings its own actions
    (an output says itself how it was made)."""
    import c2pa

    out = io.BytesIO()
    builder = c2pa.Builder(definition, context=_context(None))
    if parent is not None:
        parent_mime, parent_data = parent
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        ingredient = {"title": parent_title, "relationship": "parentOf"}
        builder.add_ingredient(ingredient, parent_mime, io.BytesIO(parent_data))
    elif not any(a["label"] == ACTIONS_LABEL for a in definition["assertions"]):
        builder.set_intent(
            c2pa.C2paBuilderIntent.CREATE, c2pa.C2paDigitalSourceType.ALGORITHMICALLY_ENHANCED
        )
    builder.sign(signer.to_c2pa(), mime, io.BytesIO(data), out)
    return out.getvalue()


#: IPTC digital source types (C2PA's vocabulary) of what a generative model outputs.
IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"
EDITED_WITH_AI = IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"


class OutputSignature(BaseModel):
    """What :func:`sign_output` wrote: the signed bytes and the action their manifest holds
    (``c2pa.created`` for an edit whose input could not be attached, see there)."""

    model_config = ConfigDict(frozen=True)

    data: bytes
    action: Literal["c2pa.edited", "c2pa.created"]
    digital_source_type: str
    ingredient_attached: bool


def sign_output(
    data: bytes,
    signer: ManifestSigner,
    *,
    model: str,
    ingredient: bytes | None = None,
    title: str | None = None,
) -> OutputSignature:
    """Sign what a generative model made: ``data`` (PNG, JPEG or WebP bytes) with a manifest
    saying so, without our immunization assertion (an output is not immunized).

    With ``ingredient`` (the input it edited, its own manifest kept as the chain), the
    action is ``c2pa.edited`` with source type compositeWithTrainedAlgorithmicMedia;
    without, ``c2pa.created`` with trainedAlgorithmicMedia. ``model`` (the release ref)
    is the action's softwareAgent. Should c2pa refuse the ingredient, the output is
    signed ``c2pa.created`` without it, still as an AI edit: the returned
    :class:`OutputSignature` says which action the manifest holds.

    Raises:
        InputError: ``data`` is not PNG, JPEG or WebP.
        ManifestError: signing failed.

    Example:
        >>> signed = sign_output(png, signer, model="photoimmune/tiny-ldm@1")  # doctest: +SKIP
        >>> signed.action  # doctest: +SKIP
        'c2pa.created'
        >>> read_manifest(signed.data, trust=ca).digital_source_type  # doctest: +SKIP
        'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia'
    """
    import c2pa

    from . import __version__

    mime = _mime_type(_container_format(data))
    parent_mime = _ingredient_mime(ingredient)
    if ingredient is not None and parent_mime is None:
        raise InputError("the ingredient must be PNG, JPEG or WebP bytes (see can_be_ingredient)")
    edited = ingredient is not None
    verb: Literal["c2pa.edited", "c2pa.created"] = "c2pa.edited" if edited else "c2pa.created"
    source_type = EDITED_WITH_AI if edited else GENERATED
    action = {"action": verb, "digitalSourceType": source_type, "softwareAgent": {"name": model}}
    definition = {
        "claim_generator_info": [{"name": "photoimmune", "version": __version__}],
        "title": title or f"output.{mime.split('/')[1]}",
        "assertions": [{"label": ACTIONS_LABEL, "data": {"actions": [action]}}],
    }
    parent = (parent_mime, ingredient) if ingredient is not None and parent_mime else None
    try:
        signed = _sign(definition, signer, mime, data, parent, parent_title="input")
    except c2pa.C2paError as err:
        if not edited:
            raise ManifestError(f"signing the output failed ({err}); check the signer") from None
        # As in sign_image: the input only adds history, and failing the pipeline call
        # for it would lose the edit. C2PA allows c2pa.edited only after the input was
        # opened, so the output is signed as created, still as an AI edit.
        logger.warning(
            "%s: the edited input could not be attached as an ingredient (%s); signed as "
            "c2pa.created without it, so its manifest chain is not kept in this one",
            definition["title"],
            err,
        )
        verb = action["action"] = "c2pa.created"
        try:
            signed = _sign(definition, signer, mime, data, None)
        except c2pa.C2paError as again:
            raise ManifestError(f"signing the output failed ({again}); check the signer") from None
    return OutputSignature(
        data=signed,
        action=verb,
        digital_source_type=source_type,
        ingredient_attached=verb == "c2pa.edited",
    )


def sign_pixels(
    pixels: np.ndarray,
    protections: Sequence[Protection],
    signer: ManifestSigner,
    *,
    fmt: str = "PNG",
    quality: int = 95,
    parent: bytes | None = None,
    title: str | None = None,
) -> bytes:
    """Encode pixels as ``fmt`` and sign them: the bytes of a finished immunized file.

    Args:
        pixels: uint8 RGB ``(H, W, 3)``, e.g. ``ImmunizationResult.pixels``.
        protections: what was done to the image.
        signer: the key and certificate chain that sign.
        fmt: ``"PNG"``, ``"JPEG"`` or ``"WEBP"``. Default: ``"PNG"`` (lossless, which
            keeps the perturbation exact).
        quality: JPEG/WebP quality, 1-100 (WebP at 100 is lossless; see
            :func:`~photoimmune.sdk.codec.encode_image`). Default: 95; PNG ignores it.
        parent: the original file's bytes (see :func:`sign_image`). Default: None.
        title: the manifest's title. Default: None.

    Example:
        >>> data = sign_pixels(result.pixels, result.protections, signer)  # doctest: +SKIP
        >>> atomic_write_bytes("out/cat.png", data)  # doctest: +SKIP
        >>> webp = sign_pixels(result.pixels, result.protections, signer,
        ...                    fmt="WEBP", quality=100)  # doctest: +SKIP
    """
    _check_signing(protections, signer, parent, title)  # before the encoding's work
    data = encode_image(pixels, fmt, quality=quality)
    return sign_image(data, protections, signer, parent=parent, title=title)


def read_manifest(
    data: bytes, *, trust: TrustAnchors = None, pixels: np.ndarray | None = None
) -> ManifestReport:
    """Read, validate and judge the manifest in an image file's bytes.

    Args:
        data: the image file's bytes (for a path, :func:`~photoimmune.sdk.io.load_image`
            with ``verify=True``).
        trust: trust anchors (CA certificates) to accept: PEM bytes or text, a PEM file's
            path, or a list of them (:func:`~photoimmune.sdk.trust.read_trust_anchors`).
            Default: None, nothing is trusted (an intact manifest is ``untrusted``).
        pixels: the file's decoded uint8 ``(H, W, 3)`` pixels, which saves decoding when
            the caller already did. Default: None, decoded from ``data``.

    Raises:
        ImageLoadError: ``data`` cannot be decoded.
        SigningKeyError: a trust anchor is no PEM CA certificate (named), or its file
            cannot be read: a bad anchor is the call's mistake, not the image's.
        InputError: ``data`` or ``pixels`` is not what it says above.

    Example:
        >>> read_manifest(open("cat.png", "rb").read(), trust=ca_pem).ok  # doctest: +SKIP
        True
    """
    import c2pa

    _check_file_bytes(data, "data", "read")
    if pixels is not None and not _is_rgb8(pixels):
        raise InputError(
            "pixels: give the file's decoded uint8 (height, width, 3) pixels "
            "(load_image(data).pixels), or leave pixels out"
        )
    if trust is not None and not isinstance(trust, bytes | str | os.PathLike | list | tuple):
        raise InputError(
            f"trust: got a {type(trust).__name__}; give PEM bytes or text, a CA file's path, "
            "or a list of them"
        )
    anchors = read_trust_anchors(trust)
    if pixels is None:
        pixels = decode_image(data).pixels
    try:
        reader = c2pa.Reader.try_create(io.BytesIO(data), context=_context(anchors))
    except c2pa.C2paError.NotSupported as err:
        return _unsupported_container(data, err)
    except c2pa.C2paError as err:
        return _report("invalid", f"the manifest cannot be parsed ({err})")
    if reader is None:
        return missing_report()
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    label = store.get("active_manifest")
    manifests = store.get("manifests", {})
    if label not in manifests:
        return _report("invalid", "the manifest store names no active manifest", state=state)
    active = manifests[label]
    failures = tuple(f["code"] for f in results.get("activeManifest", {}).get("failure", []))
    common = {
        "state": state,
        "failures": failures,
        "signer": _signer_name(active),
        "soft_binding": _soft_binding_of(active),
        "digital_source_type": _source_type_of(active),
    }
    try:
        assertion = _assertion_of(active)
    except ValidationError as err:
        return _report("invalid", f"the immunization assertion is malformed ({err})", **common)
    history = _history(label, manifests)
    if assertion is None:  # a camera's, an editor's, or a model's output (kept: its chain)
        return _report("not_immunized", history=history, **common)
    bound = assertion.binds(pixels)
    if set(failures) - _ASSET_CODES - _TRUST_CODES:
        verdict: Verdict = "invalid"
    elif not bound:
        verdict = "modified" if assertion.same_picture(pixels) else "transplanted"
    elif "signingCredential.expired" in failures:
        verdict = "expired"
    elif state != "Trusted":
        verdict = "untrusted"
    else:
        verdict = "trusted"
    return _report(verdict, pixel_bound=bound, assertion=assertion, history=history, **common)


def _unsupported_container(data: bytes, err: Exception) -> ManifestReport:
    """c2pa's NotSupported: ``missing`` for a format that cannot carry a manifest at all.

    BMP and PPM have nowhere to put one, so such a file was never signed; calling it
    tampered ("invalid") would accuse every plain bitmap. In a format c2pa does
    read, NotSupported means the manifest inside is one it cannot judge: ``invalid``.
    """
    fmt = _container_format(data)
    if fmt not in _C2PA_CONTAINERS:
        return missing_report(f"{fmt or 'this'} files cannot carry a C2PA manifest")
    return _report("invalid", f"the manifest cannot be parsed ({err})")


def missing_report(detail: str | None = None) -> ManifestReport:
    """The report for an image that carries no manifest."""
    return _report("missing", detail)


def _report(
    verdict: Verdict,
    detail: str | None = None,
    *,
    state: str | None = None,
    failures: tuple[str, ...] = (),
    signer: str | None = None,
    pixel_bound: bool = False,
    assertion: ImmunizationAssertion | None = None,
    history: tuple[ImmunizationAssertion, ...] = (),
    soft_binding: tuple[BoundCode, ...] = (),
    digital_source_type: str | None = None,
) -> ManifestReport:
    explanation = _EXPLANATIONS[verdict] + (f": {detail}" if detail else "")
    return ManifestReport(
        verdict=verdict,
        explanation=explanation,
        validation_state=state,
        failures=failures,
        signer=signer,
        pixel_bound=pixel_bound,
        assertion=assertion,
        history=history,
        soft_binding=soft_binding,
        digital_source_type=digital_source_type,
    )


def _assertion_of(manifest: dict) -> ImmunizationAssertion | None:
    for item in manifest.get("assertions", []):
        if item.get("label") == ASSERTION_LABEL:
            return ImmunizationAssertion.model_validate(item.get("data"))
    return None


def _soft_binding_of(manifest: dict) -> tuple[BoundCode, ...]:
    for item in manifest.get("assertions", []):
        if item.get("label") == SOFT_BINDING_LABEL:
            codes = codes_of_assertion(item.get("data"))
            if codes:
                return codes
    return ()


def _source_type_of(manifest: dict) -> str | None:
    """The IPTC digital source type of the manifest's creating or editing action (its URL)."""
    for item in manifest.get("assertions", []):
        if str(item.get("label", "")).startswith("c2pa.actions"):
            for action in (item.get("data") or {}).get("actions", []):
                if isinstance(action, dict) and action.get("digitalSourceType"):
                    return str(action["digitalSourceType"])
    return None


def _history(label: str, manifests: dict) -> tuple[ImmunizationAssertion, ...]:
    """Assertions along the parentOf chain, oldest first, ending with the active one."""
    chain: list[ImmunizationAssertion] = []
    seen: set[str] = set()
    while label in manifests and label not in seen:
        seen.add(label)
        manifest = manifests[label]
        try:
            assertion = _assertion_of(manifest)
        except ValidationError:
            assertion = None
        if assertion is not None:
            chain.append(assertion)
        parents = [
            ing.get("active_manifest")
            for ing in manifest.get("ingredients", [])
            if ing.get("relationship") == "parentOf"
        ]
        parent = parents[0] if parents else None
        if not isinstance(parent, str):  # the parent carried no manifest: the chain ends here
            break
        label = parent
    return tuple(reversed(chain))


def _signer_name(manifest: dict) -> str | None:
    info = manifest.get("signature_info") or {}
    parts = [info.get("common_name"), info.get("issuer")]
    return " / ".join(p for p in parts if p) or None


def _ingredient_mime(parent: bytes | None) -> str | None:
    """The parent's MIME type if c2pa can take it as an ingredient; reads the header only.

    A BMP, TIFF or GIF original can't be one: the manifest is then made without
    a parent rather than failing after the immunization work is done.
    """
    if parent is None:
        return None
    return MIME_TYPES.get(_container_format(parent) or "")


def can_be_ingredient(data: bytes) -> bool:
    """Whether c2pa can take ``data`` as an ingredient (PNG, JPEG or WebP; reads the header).

    Example:
        >>> can_be_ingredient(b"BM not much of a bitmap")
        False
    """
    return _ingredient_mime(data) is not None


def _container_format(data: bytes) -> str | None:
    """Pillow's name for the format of ``data`` (``"PNG"``, ``"BMP"``...), from its header only."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # crafted headers raise more than OSError; "unknown" is the answer
        return None


def _mime_type(fmt: str | None) -> str:
    if fmt not in MIME_TYPES:
        raise InputError(
            f"cannot sign a {fmt or 'raw'} image; C2PA manifests are written into PNG, "
            "JPEG or WebP files: convert it first"
        )
    return MIME_TYPES[fmt]


def _is_rgb8(pixels: object) -> bool:
    return (
        isinstance(pixels, np.ndarray)
        and pixels.dtype == np.uint8
        and pixels.ndim == 3
        and pixels.shape[2] == 3
    )


def _context(anchors: list[bytes] | None):
    """A c2pa context: no thumbnails, never fetch anything, trust only ``anchors`` (PEM)."""
    import c2pa

    settings = {
        "builder": {"thumbnail": {"enabled": False}},
        "verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
    }
    if anchors:
        settings["trust"] = {"trust_anchors": b"\n".join(anchors).decode()}
    return c2pa.Context(settings=c2pa.Settings.from_dict(settings))
