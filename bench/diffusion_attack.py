"""Diffusion attack cost: ours against PhotoGuard's published loop, per iteration.

On the SD 1.5 inpainting architecture (random weights: the cost of real ones),
one iteration = one gradient of the loss through the truncated edit (4 DDIM
steps, guidance 7.5, VAE encode, 9-channel UNet, VAE decode) with one noise
draw; both loops scale linearly in ``grad_reps`` (PhotoGuard's 10), and ours
back-propagates each draw before the next, so its memory does not.

Weights are bf16 on a CPU and fp16 on CUDA (PhotoGuard's published setting),
the same pipeline for both loops. Ours turns on gradient checkpointing (UNet
and VAE), channels_last on a CPU (on an H100 it cost time), and skips the
whole-image encode a 9-channel UNet never uses.

Seconds are measured in this process (median of ``--iters`` after a warm-up);
peak memory is the CUDA allocator's peak, or on a CPU the peak RSS of a fresh
process that runs only that loop (weights included).

    .venv/bin/python bench/diffusion_attack.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import reference  # bench/ is on sys.path when this script runs
import torch
from architectures import sd15_inpaint_pipeline
from memory import fresh_process_peak_rss
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


def ours_step(pipe, x01, mask, device):
    attack = DiffusionAttack(
        pipe,
        edit_mask=mask,
        grad_reps=1,
        gradient_checkpointing=True,
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


def _cpu_step(which: str, size: int) -> None:
    device = torch.device("cpu")
    pipe = build(device)
    x01, mask = inputs(size, device)
    make = reference_step if which == "reference" else ours_step
    make(pipe, x01, mask, device)()


def peak_memory(which: str, size: int, device: torch.device, pipe) -> float:
    if device.type == "cuda":
        x01, mask = inputs(size, device)
        make = reference_step if which == "reference" else ours_step
        step = make(pipe, x01, mask, device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return float(torch.cuda.max_memory_allocated(device))
    return fresh_process_peak_rss(_cpu_step, which, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [256] if args.quick else [256, 512]
    iters = args.iters or (1 if device.type == "cpu" else 5)
    console.print(
        f"device {device}, weights {weights_dtype(device)}, threads {torch.get_num_threads()}"
    )

    rows = []
    for size in sizes:
        # Reference first: ours turns on checkpointing and channels_last in the shared pipeline.
        pipe = build(device)
        x01, mask = inputs(size, device)
        ref_peak = peak_memory("reference", size, device, pipe)
        ref_s = median_seconds(reference_step(pipe, x01, mask, device), iters, device)
        ours_s = median_seconds(ours_step(pipe, x01, mask, device), iters, device)
        ours_peak = peak_memory("ours", size, device, pipe)
        rows.append((size, ref_s, ours_s, ref_peak, ours_peak))
        del pipe

    table = Table(
        title="diffusion attack, SD 1.5 inpainting architecture, one gradient per iteration"
    )
    for col in ("size", "ref s/iter", "ours s/iter", "ref peak GB", "ours peak GB"):
        table.add_column(col)
    for size, ref_s, ours_s, ref_peak, ours_peak in rows:
        table.add_row(
            str(size),
            f"{ref_s:.2f}",
            f"{ours_s:.2f}",
            f"{ref_peak / 1e9:.2f}",
            f"{ours_peak / 1e9:.2f}",
        )
    console.print(table)
    console.print("[bold]headline[/]")
    for size, ref_s, ours_s, ref_peak, ours_peak in rows:
        console.print(
            f"  {size}px: ours takes {ours_s / ref_s:.2f}x the reference's time per iteration "
            f"and {ours_peak / ref_peak:.2f}x its peak memory ({ours_peak / 1e9:.2f} GB)"
        )


if __name__ == "__main__":
    main()
