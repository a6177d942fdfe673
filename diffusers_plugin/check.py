"""The immunization check of one pipeline: per edited image, decide and act.

For each image a call edits:

1. read its C2PA manifest (when the file's bytes are at hand), verify signature,
   trust and pixel binding (:func:`~photoimmune.sdk.manifest.read_manifest`);
2. if the manifest claims immunization: ``covered`` when it is trusted, bound to
   these pixels and covers this model version or a target the version was trained
   to honour (``AttackTarget.honours``, a cooperative release); ``outdated`` when
   it covers other versions only; ``unverified`` when it does not hold up;
3. without such a claim, look for an immunization's trace in the pixels: the
   mark of a protection this release covers (its own target's or an honoured
   one's: ``covered``), else the trace of any version's (``detected``, see
   :mod:`.detection`), else ``clean``;
4. ``covered`` and ``clean`` images pass untouched; for the rest the policy
   decides: ``reimmunize`` runs the attack the target recommends (encoder,
   diffusion or edit, unless ``method=`` overrides it) against this version's
   registered target *starting from the received pixels*, signs the result as a
   new link of the manifest chain with the vendor's key, and edits that;
   ``refuse`` raises :class:`ImmunizedImageError`; ``warn`` logs and edits the
   image as given; ``allow`` records and edits it as given.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import numbers
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from photoimmune.registry.client import RegistryClient, connect
from photoimmune.registry.errors import RegistryError
from photoimmune.resolver.client import Recovery, ResolverClient, recover
from photoimmune.sdk.attacks.budget import parse_budget
from photoimmune.sdk.attacks.pgd import ProgressFn
from photoimmune.sdk.descriptor import METHODS, Budget, Method
from photoimmune.sdk.errors import InputError, OutputExistsError
from photoimmune.sdk.io import check_output_dir, pixels_to_tensor
from photoimmune.sdk.keys import (
    KeyDir,
    ManifestSigner,
    SigningKeyError,
    TrustFiles,
    default_key_dir,
    default_trust_anchors,
    read_trust_anchors,
    resolve_signer,
)
from photoimmune.sdk.limits import check_seed, check_steps
from photoimmune.sdk.manifest import (
    ManifestReport,
    can_be_ingredient,
    read_manifest,
    sign_pixels,
)
from photoimmune.sdk.mark import carries_mark
from photoimmune.sdk.refs import ModelRef
from photoimmune.sdk.targets import AttackTarget, WeightFingerprints, pipeline_fingerprints
from photoimmune.sdk.urls import url_problem

from .detection import DEFAULT_THRESHOLD, LatentDetector
from .errors import ImmunizationCheckError, ImmunizedImageError, UnregisteredModelError
from .inputs import EditedImage, bind_call, edited_argument_names, is_latents, read_argument
from .outputs import output_images, sign_outputs
from .report import (
    POLICIES,
    PROTECTED_ELSEWHERE,
    Action,
    ImageCheck,
    ImmunizationReport,
    Policy,
)

logger = logging.getLogger("photoimmune.diffusers_plugin")

#: The verdict when no manifest was read: the file had none, or no file bytes came with the image.
_NO_MANIFEST = {False: "missing", True: "unavailable"}
#: Verdicts of a manifest that is intact in itself: it can be kept as the parent of the new link.
_INTACT = ("trusted", "untrusted", "expired")


class ImmunizationWarning(UserWarning):
    """Policy ``warn``: an immunized image was edited as given."""


class ImmunizationCheck:
    """Checks every image a pipeline is asked to edit; see the module docstring.

    Made by ``pipe.enable_immunization_check(...)``, whose arguments it takes.
    """

    def __init__(
        self,
        pipe,
        registry: RegistryClient | str | os.PathLike[str],
        *,
        model: str | ModelRef | None = None,
        policy: Policy = "reimmunize",
        signer: ManifestSigner | KeyDir | None = None,
        trust: TrustFiles | None = None,
        method: Method | None = None,
        eps: str | float | None = None,
        steps: int | None = None,
        seed: int = 0,
        detect: bool = True,
        detection_threshold: float | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        trusted_root: bytes | os.PathLike[str] | None = None,
        progress: ProgressFn | None = None,
        resolvers: str | ResolverClient | Sequence[str | ResolverClient] = (),
        sign_outputs: bool | None = None,
    ) -> None:
        # Every setting is checked here: a mistake found on the first image would surface
        # only after a re-immunization's work, or never (a wrong type silently defaulted).
        if not isinstance(registry, RegistryClient | str | os.PathLike):
            raise InputError(
                f"registry={registry!r}: pass a RegistryClient, a registry folder, or a "
                "server URL with trusted_root=root.json"
            )
        if model is not None and not isinstance(model, str | ModelRef):
            raise InputError(
                f"model={model!r}: pass the release this pipeline runs as "
                "'vendor/model@version', or leave it out to recognise it by fingerprint"
            )
        if policy not in POLICIES:
            raise InputError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        if method not in (None, *METHODS):
            raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        _check_signer(signer)
        _check_trust(trust)
        if eps is not None:
            parse_budget(eps)
        if steps is not None:
            check_steps(steps)
        check_seed(seed)
        _check_flag("detect", detect)
        if sign_outputs is not None:
            _check_flag("sign_outputs", sign_outputs)
        _check_threshold(detection_threshold)
        if progress is not None and not callable(progress):
            raise InputError(
                f"progress={progress!r}: pass a function progress(step, total, loss), or None"
            )
        urls = _resolver_urls(resolvers)
        if output_dir is not None:
            check_output_dir(output_dir, option="output_dir")
        self.pipe = pipe
        self.client = (
            registry if isinstance(registry, RegistryClient) else connect(registry, trusted_root)
        )
        self.policy: Policy = policy
        self.trust: list[bytes] = read_trust_anchors(trust) or []
        # The vendor's own re-signed images must read as covered when they come back, or
        # each pass would stack another ε on them: a KeyDir's CA is trusted, and so is the
        # fallback (development) key's (again once it exists, see :attr:`signer`).
        if isinstance(signer, KeyDir):
            self._trust_also([signer.trust_anchor_pem()])
        elif signer is None:
            self._trust_also(default_trust_anchors())
        if not self.trust:
            logger.warning(
                "no trust anchors: no manifest can be trusted, so every signed image is "
                "'unverified' and re-immunized; pass trust= with publisher (and your own) CAs"
            )
        self.method, self.eps, self.steps, self.seed = method, eps, steps, seed
        self.detect = detect
        self.detection_threshold = detection_threshold
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.progress = progress
        self._signer = signer
        # A stripped image's manifest is looked up by its soft binding (only the code is sent).
        self.resolvers = [r if isinstance(r, ResolverClient) else ResolverClient(r) for r in urls]
        # Outputs are signed as the model's work when asked, and by default when the
        # vendor configured a signer (the development key is not a vendor's statement).
        self.sign_outputs = signer is not None if sign_outputs is None else sign_outputs
        self._inputs: list[tuple[str, bytes]] = []
        self._ref = ModelRef.parse(model) if isinstance(model, str) else model
        self._fingerprints: WeightFingerprints | None = None
        self._target: AttackTarget | None = None
        self._detectors: list[LatentDetector] | None = None
        self._others: list[AttackTarget] | None = None

    # -- what the pipeline is ------------------------------------------------------------

    @property
    def fingerprints(self) -> WeightFingerprints:
        """The pipeline's weight fingerprints, computed on first use."""
        if self._fingerprints is None:
            self._fingerprints = pipeline_fingerprints(self.pipe)
        return self._fingerprints

    @property
    def ref(self) -> ModelRef:
        """The registry release the pipeline runs (given, or recognised by fingerprint).

        A given release is believed only once its VAE is found to be the pipeline's: else
        images covered for it would reach other weights unchecked.
        """
        if self._ref is None:
            found = self.client.identify(self.fingerprints)
            if found is None:
                raise UnregisteredModelError(
                    f"{type(self.pipe).__name__}: its weights match no release in the registry; "
                    "pass model='vendor/model@version' if its vendor published it, or ask the "
                    "vendor to publish this release's target"
                )
            self._ref = found
        elif self._target is None:
            self._target = self._bound(self._ref)
        return self._ref

    @property
    def target(self) -> AttackTarget:
        """This release's target, bound to the pipeline's own VAE (checked by fingerprint)."""
        ref = self.ref  # a given release is bound as it is resolved
        if self._target is None:
            self._target = self._bound(ref)
        return self._target

    def _bound(self, ref: ModelRef) -> AttackTarget:
        """``ref``'s target bound to the pipeline: an :class:`InputError` unless its VAE is
        the pipeline's."""
        return self.client.get(ref).bind_pipeline(self.pipe, self.fingerprints)

    @property
    def detectors(self) -> list[LatentDetector]:
        """One detector per version of this model whose weights are at hand, this one first.

        A perturbation leaves its clearest trace in the encoder it was made for, so
        the encoders of other versions are asked too when their weights come with
        them (bundled releases do).
        """
        if self._detectors is None:
            threshold = self.detection_threshold
            kwargs = {} if threshold is None else {"threshold": threshold}
            targets = [self.target, *self._other_versions()]
            self._detectors = [LatentDetector(t, **kwargs) for t in targets]
        return self._detectors

    def _other_versions(self) -> list[AttackTarget]:
        return [t for t in self._other_targets() if t.has_weights]

    def _other_targets(self) -> list[AttackTarget]:
        """The registered targets of this model's other versions, fetched once."""
        if self._others is None:
            model = f"{self.ref.vendor}/{self.ref.model}"
            versions = [v for v in self.client.versions(model) if v != self.ref.version]
            self._others = [self.client.get(f"{model}@{v}") for v in versions]
        return self._others

    def _honoured_mark(self, pixels: np.ndarray) -> str | None:
        """The release whose mark the pixels carry, if this release covers it: its own
        target's, or one it honours. A mark needs only the target's descriptor, not the
        weights of the version it names."""
        covered = {self.target.digest, *self.target.honours}
        x01 = pixels_to_tensor(pixels)
        for target in (self.target, *self._other_targets()):
            if target.digest in covered and target.mark and carries_mark(x01, target.mark)[0]:
                return str(target.ref)
        return None

    def _detect(self, pixels: np.ndarray) -> tuple[float, str]:
        """The lowest score over the detectors, and the release it came from."""
        score, ref = min((d.score(pixels), str(d.target.ref)) for d in self.detectors)
        return round(score, 4), ref

    # -- one call ------------------------------------------------------------------------

    def prepare_call(self, call, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Check the call's edited images, apply the policy, return the arguments to run with.

        Sets ``pipe.immunization_report``; raises :class:`ImmunizedImageError` under ``refuse``.
        """
        started = time.perf_counter()
        bound = bind_call(call, args, kwargs)
        checks: list[ImageCheck] = []
        refused: ImageCheck | None = None
        self._inputs = []
        for name in edited_argument_names(self.pipe):
            value = bound.arguments.get(name)
            if is_latents(value):
                self._latents(name)
                continue
            argument = read_argument(name, value)
            if argument is None:
                continue
            values = []
            for image in argument.images:
                check, pixels = self._check_image(image)
                checks.append(check)
                if self.sign_outputs:
                    self._inputs.append(_ingredient(image, check))
                refused = refused or (check if check.action == "refused" else None)
                values.append(image.as_input(pixels))
            bound.arguments[name] = argument.rebuild(values)
        self.pipe.__dict__["immunization_report"] = ImmunizationReport(
            pipeline=type(self.pipe).__name__,
            model=str(self.ref) if checks else None,
            policy=self.policy,
            images=tuple(checks),
            seconds=round(time.perf_counter() - started, 4),
        )
        if refused is not None:
            raise ImmunizedImageError(
                f"{refused.source}: {_describe(refused, str(self.ref))}; this pipeline's policy is "
                "'refuse', so it will not edit it (policy='reimmunize' would protect it and edit)",
                refused,
            )
        return bound.args[1:], bound.kwargs

    def finish_call(self, output: Any) -> None:
        """With ``sign_outputs``, sign the call's output pictures into the report's ``outputs``."""
        report: ImmunizationReport | None = self.pipe.__dict__.get("immunization_report")
        if not self.sign_outputs or report is None:
            return
        pictures = output_images(output)
        if pictures is None:
            logger.warning("the output holds no RGB pictures (latents?); nothing was signed")
            return
        signed = sign_outputs(pictures, self._inputs, self.signer, self._software_agent())
        self.pipe.__dict__["immunization_report"] = report.model_copy(update={"outputs": signed})

    def _software_agent(self) -> str:
        """The release ref; for weights no registry knows, or a registry that cannot say
        (down, tampered), the pipeline's name."""
        try:
            return str(self.ref)
        except (InputError, RegistryError):
            # The picture is already made: naming the agent must not fail the call.
            return str(getattr(self.pipe, "name_or_path", "") or type(self.pipe).__name__)

    def _latents(self, name: str) -> None:
        """Latents carry no pixels to check: refused under ``refuse``, else logged and passed."""
        message = f"{name}: latents, not pixels; the immunization check cannot see them"
        if self.policy == "refuse":
            raise ImmunizationCheckError(
                f"{message}, and this pipeline's policy is 'refuse'; pass the image itself"
            )
        logger.warning(message)

    def _covers(self, manifest: ManifestReport) -> bool:
        """Trusted, bound to these pixels, and made against this release's current target
        or against one the release was trained to honour (no re-immunization needed)."""
        target = self.client.releases().get(self.ref) or self.client.get(self.ref)
        return manifest.covers(str(self.ref), target.digest) or manifest.covers_any(target.honours)

    def _check_image(self, image: EditedImage) -> tuple[ImageCheck, np.ndarray | None]:
        started = time.perf_counter()
        manifest = self._manifest(image)
        recovery = self._recover(image) if manifest is None else None
        if recovery is not None:
            manifest = recovery.manifest
        ref = str(self.ref)
        # Only our own assertion is a claim; a camera's or an editor's manifest is not.
        score = detected_against = None
        if manifest is not None and manifest.assertion is not None:
            status = (
                "covered" if self._covers(manifest) else "outdated" if manifest.ok else "unverified"
            )
        elif self.detect and (honoured := self._honoured_mark(image.pixels)) is not None:
            # No manifest, but the pixels carry the mark of a protection this release
            # covers: its own target's, or one its encoder honours (it reads the mark).
            score, detected_against, status = 0.0, honoured, "covered"
        elif self.detect:
            score, detected_against = self._detect(image.pixels)
            status = "detected" if score <= self.detectors[0].threshold else "clean"
        else:
            status = "clean"
        fields: dict[str, Any] = {
            "argument": image.argument,
            "index": image.index,
            "source": image.source,
            "status": status,
            "verdict": manifest.verdict if manifest else _NO_MANIFEST[image.data is None],
            "signer": manifest.signer if manifest else None,
            "protected_against": _chain_refs(manifest),
            "detection_score": score,
            "detected_against": None if status == "clean" else detected_against,
            "recovered_from": recovery.resolver if recovery is not None else None,
        }
        if status not in PROTECTED_ELSEWHERE:
            return self._done(fields, "passed", started), None
        if self.policy == "refuse":
            return self._done(fields, "refused", started), None
        if self.policy in ("warn", "allow"):
            check = self._done(fields, "warned" if self.policy == "warn" else "allowed", started)
            if self.policy == "warn":
                message = (
                    f"{image.source}: {_describe(check, ref)}; edited as given (policy 'warn')"
                )
                logger.warning(message)
                warnings.warn(message, ImmunizationWarning, stacklevel=4)
            return check, None
        return self._reimmunize(image, manifest, fields, started, recovery)

    def _manifest(self, image: EditedImage) -> ManifestReport | None:
        if image.data is None:
            return None
        report = read_manifest(image.data, trust=self.trust, pixels=image.pixels)
        return report if report.present else None

    def _recover(self, image: EditedImage) -> Recovery | None:
        """The manifest the resolvers hold for an image without one, when its pixels are
        close to the signed file's (a far candidate says nothing about this image)."""
        if not self.resolvers:
            return None
        recovery = recover(image.pixels, self.resolvers, trust=self.trust)
        return recovery if recovery is not None and recovery.pixels_close else None

    def _reimmunize(
        self,
        image: EditedImage,
        manifest: ManifestReport | None,
        fields: dict,
        started: float,
        recovery: Recovery | None = None,
    ) -> tuple[ImageCheck, np.ndarray]:
        from photoimmune.sdk.immunization import immunize

        target = self.target
        budget = self._budget(target)
        result = immunize(
            image.pixels,
            target,
            method=budget.method,
            eps=budget.eps,
            # None unless the caller chose: immunize() then runs the target's recommended
            # steps, or only its immunizer's few finishing ones when it carries one.
            steps=self.steps,
            seed=self.seed,
            device=getattr(self.pipe, "_execution_device", self.pipe.device),
            progress=self.progress,
        )
        parent = image.data if manifest is not None and manifest.verdict in _INTACT else None
        if recovery is not None and manifest is not None and manifest.verdict in _INTACT:
            parent = recovery.signed_asset  # the stripped file's signed original: chain kept
        # A trusted, pixel-bound parent's perturbations are still in these pixels: its
        # protections are listed again, so a pipeline of an older version finds its own
        # and does not add another ε (the chain keeps who measured what).
        assertion = manifest.assertion if manifest is not None else None
        carried = assertion.protections if fields["status"] == "outdated" and assertion else ()
        signed = sign_pixels(
            result.pixels,
            [*carried, *result.protections],
            self.signer,
            parent=parent,
            title=f"{_stem(image.source)}.png",
        )
        protection = result.protections[0]
        check = self._done(
            fields,
            "reimmunized",
            started,
            protection=protection,
            signed_image=signed,
            saved_to=self._save(image, signed),
        )
        logger.info(
            "%s: %s; re-immunized against %s (loss %s -> %s)",
            image.source,
            _describe(check, str(self.ref)),
            self.ref,
            protection.loss_before,
            protection.loss_after,
        )
        return check, result.pixels

    def _budget(self, target: AttackTarget) -> Budget:
        """The re-immunization's method and budget: ``method=``/``eps=``/``steps=`` where
        given, the rest as the target recommends (see :func:`choose_budget`)."""
        from photoimmune.sdk.immunization import choose_budget

        return choose_budget(target, self.method, self.eps, self.steps)

    def _done(self, fields: dict, action: Action, started: float, **extra: Any) -> ImageCheck:
        check = ImageCheck(
            **fields, action=action, seconds=round(time.perf_counter() - started, 4), **extra
        )
        if action == "passed":
            logger.debug("%s: %s, passed", check.source, check.status)
        return check

    def _trust_also(self, anchors: Sequence[bytes]) -> None:
        self.trust += [anchor for anchor in anchors if anchor not in self.trust]

    @property
    def signer(self) -> ManifestSigner:
        """The vendor's signer; without one, the development vendor key (created if needed,
        and trusted like a KeyDir's)."""
        if isinstance(self._signer, ManifestSigner):
            return self._signer
        if isinstance(self._signer, KeyDir):
            self._signer = self._signer.signer("vendor")
            return self._signer
        self._signer = resolve_signer(role="vendor")
        self._trust_also(default_trust_anchors())  # the folder may have been made just now
        logger.warning(
            "no signer given: signing re-immunized images with the development vendor key in "
            "%s (trusted here as your own); production passes "
            "signer=ManifestSigner.from_pem(key, cert)",
            default_key_dir(),
        )
        return self._signer

    def _save(self, image: EditedImage, signed: bytes) -> str | None:
        """Write the signed copy to ``output_dir`` under a new name: nothing is overwritten."""
        if self.output_dir is None:
            return None
        from photoimmune.sdk.io import atomic_write_bytes

        stem = _stem(image.source)
        digest = hashlib.sha256(signed).hexdigest()[:12]
        path = self.output_dir / f"{stem}.{self.ref.model}-{self.ref.version}.{digest}.png"
        # Same name, same digest: when it exists, the same bytes are already there.
        with contextlib.suppress(OutputExistsError):
            atomic_write_bytes(path, signed)
        return str(path)


def _check_signer(signer: object) -> None:
    """Refuse what cannot sign: it would otherwise be ignored, and the development key
    would sign in the vendor's name."""
    if signer is not None and not isinstance(signer, ManifestSigner | KeyDir):
        raise InputError(
            f"signer={signer!r}: not a signer; pass signer=ManifestSigner.from_pem(key, cert) "
            "or the KeyDir of a `photoimmune keys init` folder (leave it out for the "
            "development key)"
        )
    if isinstance(signer, KeyDir) and not signer.exists():
        raise SigningKeyError(
            f"{signer.path}: no signing keys there; pass the folder `photoimmune keys init` "
            "made, or a ManifestSigner"
        )


def _check_trust(trust: object) -> None:
    """Refuse anything but PEM bytes or text, paths, or a list of them (what
    :func:`read_trust_anchors` reads)."""
    items = trust if isinstance(trust, list | tuple) else [] if trust is None else [trust]
    for item in items:
        if not isinstance(item, bytes | str | os.PathLike):
            raise InputError(
                f"trust={trust!r}: pass CA certificates as PEM bytes or text, a path, or a "
                "list of them (a key folder's own CA is its KeyDir.ca_cert)"
            )


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):  # "no" is truthy: it would turn the setting on
        raise InputError(f"{name}={value!r}: pass True or False")


def _check_threshold(threshold: object) -> None:
    """Refuse a threshold no detection score compares with: the scores are about 1 for
    clean photos and lower for immunized ones, 0 for a mark (see :mod:`.detection`)."""
    if threshold is None:
        return
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 <= float(threshold) <= 1  # NaN compares false: refused too
    ):
        raise InputError(
            f"detection_threshold={threshold!r}: give a number from 0 to 1 (detection scores "
            "are about 1 for clean photos, lower for immunized ones; default "
            f"{DEFAULT_THRESHOLD}), or leave it out"
        )


def _resolver_urls(
    resolvers: str | ResolverClient | Sequence[str | ResolverClient],
) -> list[str | ResolverClient]:
    """The resolvers, one URL alone taken as a list of one; each URL must be http(s)."""
    items = [resolvers] if isinstance(resolvers, str | ResolverClient) else resolvers
    if not isinstance(items, list | tuple):
        raise InputError(
            f"resolvers={resolvers!r}: pass a list of resolver URLs such as "
            "['http://127.0.0.1:8480'], or ResolverClients"
        )
    for item in items:
        if isinstance(item, ResolverClient):
            continue
        problem = url_problem(item) if isinstance(item, str) else "it is not a URL"
        if problem is not None:
            raise InputError(
                f"resolvers= holds {item!r}: {problem}; give http(s) URLs of manifest resolvers, "
                "e.g. http://127.0.0.1:8480"
            )
    return list(items)


def _ingredient(image: EditedImage, check: ImageCheck) -> tuple[str, bytes]:
    """What an output was made from: the re-immunized, signed input, else the input's file
    (its manifest, if any, becomes the chain), else its pixels as PNG."""
    if check.signed_image is not None:
        return image.source, check.signed_image
    if image.data is not None and can_be_ingredient(image.data):
        return image.source, image.data
    from photoimmune.sdk.codec import encode_image

    return image.source, encode_image(image.pixels, "PNG")


def _describe(check: ImageCheck, ref: str) -> str:
    if check.status == "outdated":
        return f"immunized against {', '.join(check.protected_against)} but not {ref}"
    if check.status == "unverified":
        return f"its manifest claims immunization but is {check.verdict}"
    return (
        f"carries no manifest, but bears the trace of an immunization against "
        f"{check.detected_against} (detection score {check.detection_score})"
    )


def _stem(source: str) -> str:
    """A file-name stem for an image: its file's, or ``image`` for a PIL image or array."""
    return Path(source).stem if source[:1] != "<" else "image"


def _chain_refs(manifest: ManifestReport | None) -> tuple[str, ...]:
    return manifest.protected_against if manifest is not None else ()
