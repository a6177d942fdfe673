"""Self-attention as two plain matrix products, where that beats PyTorch's fused kernel.

A VAE's mid block attends over every latent position at once: 4,096 tokens of
512 channels for SD 1.5 at 512 px, 16,384 of 128 for the bundled tiny VAE. On a
CPU, ``scaled_dot_product_attention`` runs a flash kernel whose backward reaches
well under the machine's bf16 matrix-product rate; in bf16 the
explicit ``softmax(q kᵀ) v`` is mostly matrix products and runs them at that rate
(measured: docs/performance.md).
It materialises the ``tokens²`` score matrix, so it is used only while that
stays small.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

MAX_SCORE_BYTES = 1 << 30
"""Largest score matrix (bf16, all heads of one image) the explicit product may build."""


def prefers_matmul(hidden_states: torch.Tensor, heads: int = 1) -> bool:
    """Whether explicit matrix products should run this attention call.

    Only on a CPU, in bf16 (inputs or autocast), and while the scores fit
    :data:`MAX_SCORE_BYTES`; other dtypes and GPUs keep the fused kernel.

    Example:
        >>> prefers_matmul(torch.zeros(1, 128, 64, 64, dtype=torch.bfloat16))
        True
    """
    if hidden_states.device.type != "cpu":
        return False
    autocast_bf16 = (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    if not (hidden_states.dtype == torch.bfloat16 or autocast_bf16):
        return False  # measured for bf16 only; float32 keeps the fused kernel
    tokens = hidden_states[0, 0].numel() if hidden_states.ndim == 4 else hidden_states.shape[1]
    return heads * tokens * tokens * 2 <= MAX_SCORE_BYTES


class MatmulAttnProcessor:
    """A diffusers attention processor: explicit products where :func:`prefers_matmul`
    says so, PyTorch's fused attention otherwise.

    Example:
        >>> encoder.mid_block.attentions[0].set_processor(MatmulAttnProcessor())  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._matmul, self._fused = AttnProcessor(), AttnProcessor2_0()

    # diffusers passes only the keyword arguments a processor's signature names.
    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        use = self._matmul if prefers_matmul(hidden_states, attn.heads) else self._fused
        return use(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def use_matmul_attention(module: torch.nn.Module) -> None:
    """Give every diffusers ``Attention`` in ``module`` a :class:`MatmulAttnProcessor`.
    Their softmax then runs in the compute dtype
    (``upcast_softmax`` is turned off: a float32 softmax of the scores costs more
    than the products): its rounding moves an attack's gradient by 1-2%, far less
    than a PGD step's sign throws away. Changes ``module``: give it a copy.

    Example:
        >>> use_matmul_attention(encoder)  # doctest: +SKIP
    """
    for layer in module.modules():
        if isinstance(layer, Attention):
            layer.set_processor(MatmulAttnProcessor())
            layer.upcast_softmax = False  # read by the explicit path only
