"""Diffusion attack cost: ours against PhotoGuard's published loop, per iteration.

On the SD 1.5 inpainting architecture (random weights: the cost of real ones),
one iteration = one gradient of the loss through the truncated edit (4 DDIM
steps, guidance 7.5, VAE encode, 9-channel UNet, VAE decode) with one noise
draw; both loops scale linearly in ``grad_reps`` (PhotoGuard's 10), and ours
back-propagates each draw before the next, so its memory does not.

Weights are fp16 on CUDA (PhotoGuard's published setting) and, on a CPU, bf16
where it is native and float32 where it would be emulated; every loop gets a
freshly built pipeline of the same architecture and dtype. Ours skips the whole-image encode a
9-channel UNet never uses, runs channels_last where bf16 is native on a CPU (on
an H100 it cost time), and is measured with two kinds of gradient
checkpointing: diffusers' per block in the VAE only (``"vae"``), in UNet and
VAE (``True``), and each denoising step's UNet call as one unit with the VAE
per block (``"steps"``). Both loops attack with PhotoGuard's empty prompt,
which makes guidance's unconditional half a copy of the conditional one: ours
skips it; the ``+cfg`` variants keep it, which is what ours costs with a prompt.

Seconds are measured in this process (median of ``--iters`` after a warm-up);
peak memory is the CUDA allocator's peak, or on a CPU the peak RSS of a fresh
process while it runs one iteration of that loop (weights resident; building
them is not counted, see bench/memory.py).

    .venv/bin/python bench/diffusion_attack.py [--quick] [--device cpu|cuda]
        [--sizes 512] [--variants vae,blocks,steps,vae+cfg,steps+cfg]
"""

from __future__ import annotations

import argparse
import statistics
import time

import reference  # bench/ is on sys.path when this script runs
import torch
from architectures import sd15_inpaint_pipeline
from memory import release_freed_memory, step_peak_rss
from rich.console import Console
from rich.table import Table

from photoimmune.sdk.attacks import DiffusionAttack, PGDConfig, loss_and_grad
from photoimmune.sdk.attacks.precision import bf16_is_native, fast_dtype
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.samples import sample_pixels

console = Console(width=160)


def weights_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA as published; on a CPU bf16 where it is native, else float32."""
    if device.type == "cuda":
        return torch.float16
    return fast_dtype(device) or torch.float32


def inputs(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo in [0, 1] and an edit mask (1 = repainted): the central half, as in PhotoGuard."""
    x01 = pixels_to_tensor(sample_pixels("coffee.png", size)).to(device)
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return x01, mask


def build(device: torch.device):
    return sd15_inpaint_pipeline().to(device=device, dtype=weights_dtype(device))


def reference_step(pipe, x01, mask, device):
    dtype = weights_dtype(device)
    return lambda: reference.diffusion_attack(
        pipe,
        x01 * 2 - 1,
        mask,
        iters=1,
        grad_reps=1,
        autocast=None if dtype == torch.float32 else dtype,
    )


#: Our variants: name -> DiffusionAttack switches. The "+cfg" ones keep guidance's
#: unconditional half, which an empty prompt makes redundant: what any prompt costs.
VARIANTS = {
    "ours, vae": {"gradient_checkpointing": "vae"},
    "ours, blocks": {"gradient_checkpointing": True},
    "ours, steps": {"gradient_checkpointing": "steps"},
    "ours, vae+cfg": {"gradient_checkpointing": "vae", "skip_redundant_guidance": False},
    "ours, steps+cfg": {"gradient_checkpointing": "steps", "skip_redundant_guidance": False},
}
SHORT_NAMES = [name.removeprefix("ours, ") for name in VARIANTS]


def variant(short: str) -> str:
    """``"vae"`` -> ``"ours, vae"``, for ``--variants``."""
    name = f"ours, {short}"
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {short!r}: choose from {', '.join(SHORT_NAMES)}")
    return name


def ours_step(pipe, x01, mask, device, switches):
    attack = DiffusionAttack(
        pipe,
        edit_mask=mask,
        grad_reps=1,
        **switches,
        channels_last=device.type == "cpu" and bf16_is_native(device),
        config=PGDConfig(eps=16 / 255, steps=1, autocast=fast_dtype(device)),
    )
    gen = torch.Generator().manual_seed(0)
    attack.prepare(x01, gen)
    delta = torch.zeros_like(x01)
    return lambda: loss_and_grad(attack.loss_terms, x01, delta, attack.config, gen)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(step, iters: int, device) -> float:
    step()  # warm-up
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_step(which: str, pipe, x01, mask, device):
    if which == "reference":
        return reference_step(pipe, x01, mask, device)
    return ours_step(pipe, x01, mask, device, VARIANTS[which])


def _cpu_step(which: str, size: int):
    device = torch.device("cpu")
    x01, mask = inputs(size, device)
    return make_step(which, build(device), x01, mask, device)


def peak_memory(which: str, size: int, device: torch.device) -> float:
    if device.type != "cuda":
        return step_peak_rss(_cpu_step, which, size)
    x01, mask = inputs(size, device)
    step = make_step(which, build(device), x01, mask, device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    return float(torch.cuda.max_memory_allocated(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument(
        "--sizes",
        type=lambda t: [int(v) for v in t.split(",")],
        help="comma-separated, e.g. 512 (default: 256,512; quick 256)",
    )
    parser.add_argument("--variants", help=f"comma-separated subset of {','.join(SHORT_NAMES)}")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    chosen = [variant(v) for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    iters = args.iters or (1 if device.type == "cpu" else 5)
    console.print(
        f"device {device}, weights {weights_dtype(device)}, threads {torch.get_num_threads()}"
    )

    loops = ["reference", *chosen]
    table = Table(
        title="diffusion attack, SD 1.5 inpainting architecture, one gradient per iteration"
    )
    for col in ("size", "loop", "s/iter", "peak GB", "time vs ref", "memory vs ref"):
        table.add_column(col)
    headline = []
    for size in sizes:
        x01, mask = inputs(size, device)
        # Peaks first, each in a fresh process while this one holds nothing big.
        peaks = {which: peak_memory(which, size, device) for which in loops}
        seconds = {}
        for which in loops:
            # A fresh pipeline each: our switches change the modules they are given.
            step = make_step(which, build(device), x01, mask, device)
            seconds[which] = median_seconds(step, iters, device)
            del step
            release_freed_memory()
        for which in loops:
            time_ratio = seconds[which] / seconds["reference"]
            memory_ratio = peaks[which] / peaks["reference"]
            table.add_row(
                str(size),
                which,
                f"{seconds[which]:.2f}",
                f"{peaks[which] / 1e9:.2f}",
                f"{time_ratio:.2f}x",
                f"{memory_ratio:.2f}x",
            )
            if which != "reference":
                headline.append(
                    f"  {size}px, {which}: {time_ratio:.2f}x the reference's time per "
                    f"iteration, {memory_ratio:.2f}x its peak memory ({peaks[which] / 1e9:.2f} GB)"
                )
    console.print(table)
    console.print("[bold]headline[/]")
    for line in headline:
        console.print(line)


if __name__ == "__main__":
    main()
