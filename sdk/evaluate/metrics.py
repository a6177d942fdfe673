"""The paper's metrics between edits, computed with piq (and local networks where needed).

* per pair (edit of the clean photo vs edit of the treated photo): SSIM, PSNR,
  VIFp, FSIM;
* per set (all edits of clean photos vs all edits of treated ones): FID and
  precision/recall on features of a local classifier's weights
  (:class:`FeatureExtractor`; InceptionV3 is FID's usual choice);
* image-prompt CLIP similarity, from a local CLIP folder (:class:`ClipScorer`).

Nothing is downloaded: networks are built from torchvision/transformers configs
and loaded from files the caller names.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
from collections.abc import Sequence

import numpy as np
import piq
import torch

from ..errors import InputError
from ..io import pixels_to_tensor

PAIR_METRICS = ("ssim", "psnr", "vif_p", "fsim")
SET_METRICS = ("fid", "precision", "recall")
_PAIR_FUNCTIONS = {"ssim": piq.ssim, "psnr": piq.psnr, "vif_p": piq.vif_p, "fsim": piq.fsim}
_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def pair_metrics(
    reference: np.ndarray, edited: np.ndarray, names: Sequence[str] = PAIR_METRICS
) -> dict[str, float]:
    """The one home of the pair metrics: SSIM, PSNR (dB), VIFp and FSIM between two uint8
    images, computed with piq at data range 1.

    PSNR follows piq: the MSE gets 1e-8 added, so identical images score 80 dB, never inf.

    Args:
        reference: the edit of the clean photo, HxWx3 uint8 (VIFp is asymmetric).
        edited: the edit of the treated photo, same shape.
        names: which of :data:`PAIR_METRICS` to compute, in this order. Default: all four.

    Example:
        >>> pixels = np.full((64, 64, 3), 128, np.uint8)
        >>> round(pair_metrics(pixels, pixels)["ssim"], 3)
        1.0
        >>> round(pair_metrics(pixels, pixels, ("psnr",))["psnr"], 1)
        80.0
    """
    unknown = [name for name in names if name not in _PAIR_FUNCTIONS]
    if unknown:
        raise InputError(f"unknown pair metric(s) {unknown}; use {', '.join(PAIR_METRICS)}")
    # piq's second argument is the reference (VIFp is asymmetric).
    x, y = pixels_to_tensor(edited), pixels_to_tensor(reference)
    return {name: float(_PAIR_FUNCTIONS[name](x, y, data_range=1.0)) for name in names}


def edit_similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """SSIM (4 decimals) and PSNR (dB, 2 decimals) between two uint8 images: the demo's and
    the benchmarks' two numbers, from :func:`pair_metrics`.

    Example:
        >>> edit_similarity(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))[0]
        1.0
    """
    scores = pair_metrics(a, b, ("ssim", "psnr"))
    return round(scores["ssim"], 4), round(scores["psnr"], 2)


class FeatureExtractor:
    """Pooled features of a torchvision classifier built from its config and local weights.

    Example:
        >>> features = FeatureExtractor("inception_v3_google.pth")  # doctest: +SKIP
        >>> features(edits).shape  # doctest: +SKIP
        torch.Size([4, 2048])
    """

    def __init__(self, weights: str | os.PathLike[str], arch: str = "inception_v3") -> None:
        import torchvision

        builder = getattr(torchvision.models, arch, None)
        if builder is None:
            raise InputError(f"unknown torchvision architecture {arch!r}; e.g. inception_v3")
        # torchvision's InceptionV3 weights expect its own input transform, which loading
        # them through torchvision would switch on.
        extra = (
            {"aux_logits": False, "init_weights": False, "transform_input": True}
            if arch == "inception_v3"
            else {}
        )
        model = builder(weights=None, **extra)
        if not isinstance(getattr(model, "fc", None), torch.nn.Linear):
            raise InputError(
                f"{arch}: no final `fc` layer to take pooled features before; use an "
                "architecture such as inception_v3 or resnet50"
            )
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            # FID never uses InceptionV3's auxiliary classifier; its weights may come along.
            state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
            model.load_state_dict(state)
        except (OSError, RuntimeError, AttributeError, pickle.UnpicklingError) as exc:
            raise InputError(
                f"{weights}: not a state dict of torchvision's {arch} ({exc}); pass the "
                "weights file of that architecture"
            ) from None
        model.fc = torch.nn.Identity()  # the pooled features, not the class scores
        self.model = model.eval()
        self.size = 299 if arch == "inception_v3" else 224

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = pixels_to_tensor(list(images))
        size = (self.size, self.size)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        return self.model((x - _IMAGENET_MEAN) / _IMAGENET_STD).flatten(1)


def set_metrics(reference: torch.Tensor, treated: torch.Tensor) -> dict[str, float | None]:
    """FID, precision and recall between two feature sets (None where too few samples).

    With a handful of samples in hundreds of dimensions these are rough numbers.
    """
    n = min(len(reference), len(treated))
    with contextlib.redirect_stdout(io.StringIO()):  # piq prints warnings to stdout
        fid = float(piq.FID()(reference, treated)) if n >= 2 else math.nan
    out: dict[str, float | None] = {"fid": fid if math.isfinite(fid) else None}
    if n >= 3:
        precision, recall = piq.PR(nearest_k=min(5, n - 2))(reference, treated)
        out |= {"precision": float(precision), "recall": float(recall)}
    else:
        out |= {"precision": None, "recall": None}
    return out


class ClipScorer:
    """Image-prompt similarity (cosine x 100) from a local CLIP folder (``save_pretrained``).

    Example:
        >>> ClipScorer("/models/clip-vit-base-patch32")(edit, "a cat in the snow")  # doctest: +SKIP
        27.4
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
            self.processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{folder}: not a local CLIP folder ({exc}); pass the folder a CLIPModel, its "
                "tokenizer and image processor were saved to"
            ) from None

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str) -> float:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer(prompt, return_tensors="pt", padding=True, truncation=True)
        out = self.model(pixel_values=pixels, **tokens)
        return 100 * float(
            torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)[0]
        )
