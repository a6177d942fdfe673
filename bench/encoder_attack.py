"""Encoder attack cost: ours against PhotoGuard's published loop, in the same process.

(a) seconds per PGD iteration on the SD 1.5 VAE architecture (random weights,
    same cost as real ones), the reference run as published (its
    ``autocast('cuda')``: fp16 on CUDA, plain fp32 on a CPU) and given bf16
    autocast (its best case on a CPU), against ours (the SDK's bf16 autocast,
    encoder only, channels_last on a CPU);
(b) time to quality: the loss the reference reaches with its published schedule
    (ε 0.06 and step 0.02 in [-1, 1] scale, 1000 iterations, zero-latent target;
    loss ‖E(x')‖ on the latent mean), then the iterations and seconds ours
    needs to reach that same loss at the same ε (early stop at the target), with
    PhotoGuard's linearly decaying step and with APGD's adaptive one; "reached"
    is judged in float32 on the returned image and allows a relative 1e-6,
    float32's rounding of the loss, no more. Where ours runs in bf16 its early
    stop waits for a loss 2e-3 below the target (bf16 and float32 losses
    of one image disagree by up to 1e-3 here), so it never stops short of it.
    A budget is SCHEDULE[+mMOMENTUM][+xEXACT]:ITERATIONS, e.g.
    ``linear+m0.75+x8:85``: PhotoGuard's decaying step squeezed into 85
    iterations, momentum 0.75, the last 8 in float32 (``exact_steps``);
    ``--published-sample K`` times the reference as published over K
    iterations and scales to 1000 (its loop costs the same every iteration),
    for CPUs where 1000 float32 iterations take an hour or more;
(c) achieved FLOP/s of one of our iterations (``torch.utils.flop_counter``)
    against this machine's bf16 matrix-product rate, measured in the same run,
    eager and ``torch.compile``'d (``VAEEncoder(compile=True)``, its compile time
    printed apart);
(d) peak memory: on CUDA the allocator's peak, on a CPU the peak RSS of a
    fresh process while it runs only that attack (weights resident; building
    them is not counted, see bench/memory.py).

    .venv/bin/python bench/encoder_attack.py [--quick] [--device cpu|cuda]
        [--parts abd] [--sizes 512] [--cases tiny-ldm@1:512,sd15:256] [--budgets apgd:50,apgd:100]
        [--published-sample K]

``--quick`` (under 3 minutes on 2 cores) shrinks (b) to the bundled VAE at
128 px and a 200-iteration reference, and prints the headline ratios last.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import reference  # bench/ is on sys.path when this script runs
import torch
from architectures import sd15_vae
from memory import step_peak_rss
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from photoimmune.sdk.attacks import PGDConfig, VAEEncoder, bf16_is_native, fast_dtype, run_pgd
from photoimmune.sdk.io import pixels_to_tensor
from photoimmune.sdk.samples import sample_pixels

console = Console(width=160)
# PhotoGuard's published encoder-attack settings, in its [-1, 1] scale.
REF_EPS, REF_STEP, REF_ITERS = 0.06, 0.02, 1000
# Two images' losses this close are equal to float32 precision: our encoder copy
# and vae.encode disagree by about this much on the same image (measured: ours
# stopped at the target while vae.encode put that image 6e-7 above it).
SAME_LOSS = 1e-6
# bf16 and float32 losses of the same image disagree by up to 1e-3 relative
# (measured on the bundled VAE at 256 and 512 and on the SD 1.5 architecture at
# 256); a bf16 early stop twice that far below the target cannot fire short of it.
BF16_STOP_MARGIN = 2e-3


def load_vae(name: str):
    if name == "sd15":
        return sd15_vae()
    from diffusers import AutoencoderKL

    from photoimmune.sdk.models import resolve_model

    vae = AutoencoderKL.from_pretrained(resolve_model(name) / "vae", local_files_only=True)
    return vae.eval().requires_grad_(False)


def photo(size: int, device: torch.device) -> torch.Tensor:
    """A validation photo in [0, 1] at ``size``."""
    return pixels_to_tensor(sample_pixels("coffee.png", size)).to(device)


def ours_encoder(vae, device: torch.device, compile: bool = False) -> VAEEncoder:
    """Our encoder-only module: float32 weights for :func:`ours_config`'s autocast, the
    first convolution outside it (``float32_input``, a copy: the reference's VAE stays
    as built), attention as explicit products (``matmul_attention``, CPU only);
    channels_last with bf16 on a CPU (on an H100 it cost ~10%); ``compile``:
    torch.compile'd (its compiling is timed apart, in (a)'s warm-up)."""
    bf16 = fast_dtype(device) is not None
    channels_last = device.type == "cpu" and bf16
    encoder = VAEEncoder(
        vae,
        channels_last=channels_last,
        compile=compile,
        float32_input=bf16,
        matmul_attention=bf16,
    )
    return encoder.to(device)


def ours_config(device: torch.device, spec: str = "linear", steps: int = 1, **fields) -> PGDConfig:
    """Our PGD settings at the reference's ε: bf16 autocast where native (float32 elsewhere:
    emulated bf16 is 10-300x slower), no random start, no 8-bit rounding (the reference
    returns unrounded images). ``spec`` is a schedule with options: ``linear+m0.75``
    adds momentum 0.75, ``+x8`` runs the last 8 iterations in float32 (``exact_steps``)."""
    name, *options = spec.split("+")
    for option in options:
        key = {"m": "momentum", "x": "exact_steps"}.get(option[:1])
        if key is None:
            raise SystemExit(f"unknown option {option!r} in {spec!r}: use +mMOMENTUM or +xSTEPS")
        fields[key] = float(option[1:]) if key == "momentum" else int(option[1:])
    return PGDConfig(
        eps=REF_EPS / 2,
        steps=steps,
        schedule=name,
        quantize=False,
        random_start=False,
        autocast=fast_dtype(device),
        **fields,
    )


def ours_loss(encoder: VAEEncoder) -> Callable[[torch.Tensor], torch.Tensor]:
    # Zero latent target; the mean of squares is a monotone function of the
    # reference's ‖E(x')‖, so both chase the same minimiser.
    return lambda v: encoder(v).pow(2).flatten(1).mean(1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_iteration(run: Callable[[int], object], iters: int, device) -> float:
    """Marginal cost of one iteration: (time of 1 + ``iters`` runs - time of 1) / ``iters``.

    The difference cancels what a call costs once, whatever its iteration count
    (ours evaluates the loss before and after the attack; the reference does not).
    """

    def timed(n: int) -> float:
        sync(device)
        start = time.perf_counter()
        run(n)
        sync(device)
        return time.perf_counter() - start

    run(1)  # warm-up: allocator, kernels, lazy inits
    return (timed(1 + iters) - timed(1)) / iters


def ref_autocast(device: torch.device, bf16: bool) -> torch.dtype | None:
    if bf16:  # its best case: bf16 where native; where emulated, float32 is faster
        return fast_dtype(device)
    return torch.float16 if device.type == "cuda" else None  # autocast('cuda') as published


def ref_runner(vae, x01, device, bf16: bool):
    x = x01 * 2 - 1
    dtype = ref_autocast(device, bf16)
    return lambda n: reference.encoder_attack(
        vae, x, eps=REF_EPS, step=REF_STEP, iters=n, autocast=dtype
    )


def ours_runner(encoder, x01, device):
    loss = ours_loss(encoder)
    return lambda n: run_pgd(loss, x01, ours_config(device, steps=n))


# --------------------------------------------------------------------------- (a), (c)


@dataclass
class IterationCosts:
    size: int
    ref_published: float
    ref_bf16: float
    ours: float
    ours_compiled: float
    compile_seconds: float
    ours_flops: float
    matmul_rate: float

    def share_of_matmul_rate(self, seconds: float) -> float:
        return self.ours_flops / seconds / self.matmul_rate


def iteration_costs(
    size: int, iters: int, device: torch.device, rate: float, compiled: bool, rounds: int = 2
) -> IterationCosts:
    """Each loop timed ``rounds`` times, in turn, keeping its best: on a shared machine
    speed drifts over minutes, and timing one loop after the other biases the comparison
    (measured here: a sequential run showed ours 20 % slower, interleaved runs did not).
    ``compiled``: also time ours torch.compile'd (not in --quick: compiling takes ~45 s)."""
    vae = sd15_vae().to(device)
    x01 = photo(size, device)
    encoder = ours_encoder(vae, device)
    runners = {
        "published": ref_runner(vae, x01, device, False),
        "best": ref_runner(vae, x01, device, True),
        "ours": ours_runner(encoder, x01, device),
    }
    compile_seconds = math.nan
    if compiled:
        compiled_encoder = ours_encoder(vae, device, compile=True)
        runners["compiled"] = ours_runner(compiled_encoder, x01, device)
        sync(device)
        start = time.perf_counter()
        runners["compiled"](1)  # compiles its graphs (no-grad and grad) for this shape
        sync(device)
        compile_seconds = time.perf_counter() - start
    best = dict.fromkeys(runners, math.inf)
    for _ in range(rounds):
        for name, run in runners.items():
            best[name] = min(best[name], seconds_per_iteration(run, iters, device))
    loss = ours_loss(encoder)
    delta = torch.zeros_like(x01, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        loss(x01 + delta).sum().backward()
    flops = counter.get_total_flops()
    return IterationCosts(
        size,
        best["published"],
        best["best"],
        best["ours"],
        best.get("compiled", math.nan),  # not timed in --quick
        compile_seconds,
        flops,
        rate,
    )


def matmul_rate(device: torch.device, n: int = 4096, reps: int = 10) -> float:
    """Matrix-product FLOP/s of this machine, measured now, in the dtype ours runs in
    (bf16 where native, else float32)."""
    dtype = fast_dtype(device) or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


# --------------------------------------------------------------------------- (b)


@dataclass
class TimeToQuality:
    model: str
    size: int
    ref_iters: int
    ref_loss: float
    ref_seconds_bf16: float
    ref_seconds_published: float
    ours_schedule: str
    ours_budget: int
    ours_iters: int | None
    ours_seconds: float
    ours_loss: float
    clean_loss: float

    @property
    def share_of_reference_gain(self) -> float:
        """How much of the reference's loss reduction ours achieved (1.0 = all of it)."""
        return (self.clean_loss - self.ours_loss) / max(self.clean_loss - self.ref_loss, 1e-12)


def time_to_quality(
    model: str,
    size: int,
    ref_iters: int,
    budgets: list[tuple[str, int]],
    device: torch.device,
    published_sample: int | None = None,
) -> list[TimeToQuality]:
    """One row per (schedule, iteration budget) of ours, each stopping early at the target.

    ``published_sample``: time the reference as published over that many
    iterations and scale to ``ref_iters`` instead of running all of them.
    """
    vae = load_vae(model).to(device)
    x01 = photo(size, device)

    def ref_metric(x_m11: torch.Tensor) -> float:
        with torch.no_grad():
            return float(vae.encode(x_m11).latent_dist.mean.float().norm())

    def ref_seconds(bf16: bool, iters: int) -> tuple[float, torch.Tensor]:
        sync(device)
        start = time.perf_counter()
        x_ref = reference.encoder_attack(
            vae,
            x01 * 2 - 1,
            eps=REF_EPS,
            step=REF_STEP,
            iters=iters,
            autocast=ref_autocast(device, bf16),
        )
        sync(device)
        return time.perf_counter() - start, x_ref

    seconds_bf16, x_ref = ref_seconds(True, ref_iters)
    ref_loss = ref_metric(x_ref)
    if ref_autocast(device, True) == ref_autocast(device, False):
        seconds_published = seconds_bf16  # one loop: no bf16 on this machine
    elif published_sample:
        sampled, _ = ref_seconds(False, published_sample)
        seconds_published = sampled * ref_iters / published_sample
    else:
        seconds_published, _ = ref_seconds(False, ref_iters)
    timings = {True: seconds_bf16, False: seconds_published}
    clean_loss = ref_metric(x01 * 2 - 1)
    # Our loss is scale² ‖m‖² / numel (m the latent mean): the same target, restated.
    encoder = ours_encoder(vae, device)
    numel = encoder(x01).numel()
    target = encoder.scaling_factor**2 * ref_loss**2 / numel
    rows = []
    for schedule, budget in budgets:
        cfg = ours_config(device, schedule, budget)
        # An exact finish stops on float32 losses only (run_pgd); a bf16 loss must
        # be far enough below the target that rounding cannot have put it there.
        inexact = cfg.autocast is not None and cfg.exact_steps == 0
        cfg = replace(cfg, loss_target=target * (1 - BF16_STOP_MARGIN) if inexact else target)
        sync(device)
        start = time.perf_counter()
        result = run_pgd(ours_loss(encoder), x01, cfg)
        sync(device)
        seconds = time.perf_counter() - start
        achieved = ref_metric(result.x_adv * 2 - 1)
        # Judged in fp32 on the returned image, as the reference's loss was: the
        # bf16 loss that stopped the run early is only the trigger.
        reached = achieved <= ref_loss * (1 + SAME_LOSS)
        rows.append(
            TimeToQuality(
                model,
                size,
                ref_iters,
                ref_loss,
                timings[True],
                timings[False],
                schedule,
                budget,
                result.steps_run if reached else None,
                seconds,
                achieved,
                clean_loss,
            )
        )
    return rows


# --------------------------------------------------------------------------- (d)


def _attack(which: str, size: int, device: torch.device) -> Callable[[], object]:
    """Two iterations of one loop at ``size``, ready to run (its model built)."""
    vae = sd15_vae().to(device)
    x01 = photo(size, device)
    run = (
        ref_runner(vae, x01, device, True)
        if which == "reference"
        else ours_runner(ours_encoder(vae, device), x01, device)
    )
    return lambda: run(2)


def _cpu_attack(which: str, size: int) -> Callable[[], object]:
    return _attack(which, size, torch.device("cpu"))


def peak_memory(which: str, size: int, device: torch.device) -> float:
    """Peak bytes of one attack at ``size``: CUDA allocator peak, or a fresh process's RSS
    (weights resident, building them not counted)."""
    if device.type != "cuda":
        return step_peak_rss(_cpu_attack, which, size)
    step = _attack(which, size, device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    return float(torch.cuda.max_memory_allocated(device))


# --------------------------------------------------------------------------- report


def add_quality_row(table: Table, q: TimeToQuality) -> None:
    reached = q.ours_iters is not None
    table.add_row(
        q.model,
        str(q.size),
        str(q.ref_iters),
        f"{q.ref_loss:.4f}",
        f"{q.ref_seconds_bf16:.1f}",
        f"{q.ref_seconds_published:.1f}",
        q.ours_schedule,
        str(q.ours_budget),
        str(q.ours_iters) if reached else "not reached",
        f"{q.ours_seconds:.1f}",
        f"{q.ours_loss:.4f}",
        f"{q.share_of_reference_gain:.2%}",
        f"{q.ref_seconds_bf16 / q.ours_seconds:.1f}x" if reached else "-",
        f"{q.ref_seconds_published / q.ours_seconds:.1f}x" if reached else "-",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=None, help="iterations timed in (a)")
    parser.add_argument("--parts", default="abd", help="which of (a)+(c), (b), (d) to run")
    parser.add_argument(
        "--sizes",
        type=lambda t: [int(v) for v in t.split(",")],
        help="(a) and (d): comma-separated (default 256,512; quick 256)",
    )
    parser.add_argument("--cases", type=_pairs, help="(b)'s MODEL:SIZE list, e.g. sd15:256")
    parser.add_argument(
        "--budgets",
        type=_pairs,
        help="(b)'s SCHEDULE:ITERS list of ours; +mM adds momentum M, +xK ends with K float32 "
        "iterations (linear+m0.75+x8:85)",
    )
    parser.add_argument("--ref-iters", type=int, default=REF_ITERS, help="(b) with --cases")
    parser.add_argument(
        "--published-sample",
        type=int,
        default=None,
        help="(b): time the reference as published over this many iterations, scaled to 1000",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    iters = args.iters or (2 if args.quick else (20 if device.type == "cuda" else 3))
    console.print(
        f"device {device}, torch threads {torch.get_num_threads()}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 native: {bf16_is_native(device)}"
    )

    costs = per_iteration_report(sizes, iters, device, not args.quick) if "a" in args.parts else []
    quality = []
    if "b" in args.parts:
        cases = (
            [(m, s, args.ref_iters) for m, s in args.cases]
            if args.cases
            else [("tiny-ldm@1", 128, 200)]
            if args.quick
            else [
                ("tiny-ldm@1", 256, REF_ITERS),
                ("tiny-ldm@1", 512, REF_ITERS),
                ("sd15", 256, REF_ITERS),
            ]
        )
        budgets = args.budgets or (
            [("linear", 20), ("apgd", 20)]
            if args.quick
            else [(schedule, n) for schedule in ("linear", "apgd") for n in (50, 100, 200)]
        )
        quality = quality_report(cases, budgets, device, args.published_sample)
    if "d" in args.parts:
        memory_report(sizes, device)
    headline(costs, quality)


def _pairs(text: str) -> list[tuple[str, int]]:
    """``"a:1,b:2"`` -> ``[("a", 1), ("b", 2)]``."""
    pairs = [item.rsplit(":", 1) for item in text.split(",")]
    return [(name, int(number)) for name, number in pairs]


def per_iteration_report(
    sizes: list[int], iters: int, device: torch.device, compiled: bool
) -> list[IterationCosts]:
    rate = matmul_rate(device)
    table_a = Table(title="(a) seconds per iteration, SD 1.5 VAE architecture")
    for col in (
        "size",
        "ref as published",
        "ref + bf16",
        "ours",
        "ours + compile",
        "best ours vs ref+bf16",
        "ours FLOP/s",
        "of matmul rate",
        "+ compile: FLOP/s",
        "of matmul rate",
        "compiling (s)",
    ):
        table_a.add_column(col)
    costs = []
    for size in sizes:
        c = iteration_costs(size, iters, device, rate, compiled)
        costs.append(c)
        table_a.add_row(
            str(size),
            f"{c.ref_published:.3f}",
            f"{c.ref_bf16:.3f}",
            f"{c.ours:.3f}",
            _maybe(c.ours_compiled, "{:.3f}"),
            f"{c.ref_bf16 / min(c.ours, c.ours_compiled):.2f}x",
            f"{c.ours_flops / c.ours / 1e9:.0f} G",
            f"{c.share_of_matmul_rate(c.ours):.0%}",
            _maybe(c.ours_flops / c.ours_compiled / 1e9, "{:.0f} G"),
            _maybe(c.share_of_matmul_rate(c.ours_compiled), "{:.0%}"),
            _maybe(c.compile_seconds, "{:.0f}"),
        )
    console.print(table_a)
    matmul_dtype = str(fast_dtype(device) or torch.float32).removeprefix("torch.")
    console.print(f"(c) {matmul_dtype} 4096² matrix product: {rate / 1e9:.0f} GFLOP/s on {device}")
    return costs


def _maybe(value: float, fmt: str) -> str:
    """``fmt`` of a value, or "-" for one not measured (NaN)."""
    return "-" if math.isnan(value) else fmt.format(value)


def quality_report(
    cases: list[tuple[str, int, int]],
    budgets: list[tuple[str, int]],
    device: torch.device,
    published_sample: int | None,
) -> list[TimeToQuality]:
    """Table (b); returns each case's headline row: the fastest that reached, else the closest."""
    table_b = Table(title="(b) time to the reference's final loss (same ε, zero-latent target)")
    for col in (
        "model",
        "size",
        "ref iters",
        "ref loss",
        "ref s (bf16)",
        "ref s (published)",
        "ours schedule",
        "ours budget",
        "ours iters",
        "ours s",
        "ours loss",
        "of ref's gain",
        "speed-up vs bf16",
        "vs published",
    ):
        table_b.add_column(col)
    quality = []
    for model, size, ref_iters in cases:
        rows = time_to_quality(model, size, ref_iters, budgets, device, published_sample)
        reached = [q for q in rows if q.ours_iters]
        quality.append(
            min(reached, key=lambda q: q.ours_seconds)
            if reached
            else max(rows, key=lambda q: q.share_of_reference_gain)
        )
        for q in rows:
            add_quality_row(table_b, q)
        console.print(table_b)  # after each case: a long run shows what it has so far
    if published_sample:
        console.print(
            f"(b) 'ref s (published)': {published_sample} iterations timed, scaled to the "
            "reference's iteration count"
        )
    return quality


def memory_report(sizes: list[int], device: torch.device) -> None:
    table_d = Table(title="(d) peak memory, SD 1.5 VAE architecture (GB)")
    for col in ("size", "reference (its best here)", "ours"):
        table_d.add_column(col)
    for size in sizes:
        ref_peak = peak_memory("reference", size, device)
        ours_peak = peak_memory("ours", size, device)
        table_d.add_row(str(size), f"{ref_peak / 1e9:.2f}", f"{ours_peak / 1e9:.2f}")
    console.print(table_d)


def headline(costs: list[IterationCosts], quality: list[TimeToQuality]) -> None:
    console.print("[bold]headline[/]")
    for c in costs:
        console.print(
            f"  per iteration at {c.size}: ours {c.ref_bf16 / c.ours:.2f}x faster than ref+bf16, "
            f"{c.ref_published / c.ours:.2f}x than ref as published; "
            f"{c.share_of_matmul_rate(c.ours):.0%} of the matmul rate"
            + (
                f"; compiled {c.share_of_matmul_rate(c.ours_compiled):.0%} "
                f"({c.ref_bf16 / c.ours_compiled:.2f}x ref+bf16)"
                if not math.isnan(c.ours_compiled)
                else ""
            )
        )
    for q in quality:
        if q.ours_iters:
            console.print(
                f"  time to quality, {q.model} at {q.size}: "
                f"{q.ref_seconds_bf16 / q.ours_seconds:.1f}x vs ref+bf16, "
                f"{q.ref_seconds_published / q.ours_seconds:.1f}x vs ref as published "
                f"({q.ours_iters} of our {q.ours_schedule} iterations against {q.ref_iters})"
            )
        else:
            console.print(
                f"  time to quality, {q.model} at {q.size}: not reached in {q.ours_budget} "
                f"{q.ours_schedule} iterations ({q.share_of_reference_gain:.2%} of the "
                "reference's loss reduction, "
                f"{q.ref_seconds_bf16 / q.ours_seconds:.1f}x sooner)"
            )


if __name__ == "__main__":
    main()
