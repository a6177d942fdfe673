"""Signing what a pipeline made (``sign_outputs``): each output says it is AI-made, and by what.

An edit's output gets ``c2pa.edited`` with digitalSourceType
compositeWithTrainedAlgorithmicMedia and the (re-immunized) input as its
``parentOf`` ingredient, so the input's manifest chain is kept inside; a pure
generation gets ``c2pa.created`` with trainedAlgorithmicMedia. The release ref
is the action's softwareAgent. Outputs come as PIL images, numpy arrays or
tensors (``output_type``); latents are not pictures and are not signed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from photoimmune.sdk.codec import encode_png_fast
from photoimmune.sdk.keys import ManifestSigner
from photoimmune.sdk.manifest import sign_output

from .inputs import uint8_pixels
from .report import SignedOutput

logger = logging.getLogger("photoimmune.diffusers_plugin")


def output_images(output: Any) -> list[np.ndarray] | None:
    """The pictures in a pipeline's output as uint8 RGB, or None when it holds none.

    Example:
        >>> len(output_images((np.zeros((2, 8, 8, 3), np.float32),)))
        2
    """
    images = output[0] if isinstance(output, tuple) else getattr(output, "images", None)
    if images is None:
        return None
    if hasattr(images, "detach"):  # a torch tensor, (N, C, H, W) in [0, 1]
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            return None  # latents, or a layout that is not RGB pictures
        return [uint8_pixels(a) for a in images]
    found = []
    for image in images:
        if hasattr(image, "convert"):  # PIL
            found.append(np.asarray(image.convert("RGB")))
        elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
            found.append(uint8_pixels(image))
        else:
            return None
    return found


def sign_outputs(
    pictures: Sequence[np.ndarray],
    inputs: Sequence[tuple[str, bytes]],
    signer: ManifestSigner,
    model: str,
) -> tuple[SignedOutput, ...]:
    """Sign each picture as ``model``'s work; ``inputs`` are the edited images (source, bytes).

    Output ``i`` takes input ``i`` as its ingredient when there are as many inputs
    as outputs, else the first input (one photo, several variations).
    """
    signed = []
    for index, pixels in enumerate(pictures):
        started = time.perf_counter()
        given = inputs[index] if len(inputs) == len(pictures) else inputs[0] if inputs else None
        signature = sign_output(
            encode_png_fast(pixels),  # outputs are many: speed over bytes
            signer,
            model=model,
            ingredient=given[1] if given else None,
            title=f"output-{index}.png",
        )
        signed.append(
            SignedOutput(
                index=index,
                action=signature.action,
                digital_source_type=signature.digital_source_type,
                software_agent=model,
                # only an input c2pa attached is in the chain (see sign_output's fallback)
                ingredient=given[0] if given and signature.ingredient_attached else None,
                signed_image=signature.data,
                seconds=round(time.perf_counter() - started, 4),
            )
        )
    return tuple(signed)
