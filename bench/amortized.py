"""The one-pass immunizer against 100-step PGD, as ratios in one run (issue 25).

On the held-out photos (chelsea, coffee; never trained on), at each ``--sizes``:

(a) time: one pass (``immunize(method="amortized")``: the generator, the 8-bit
    rounding and the two loss evaluations a Protection records), a warm start
    plus ``--finish`` PGD steps and the cold default (``--no-warm-start``:
    momentum PGD, a share of the recommended steps), against PhotoGuard's loop,
    100 plain PGD steps from a random start (the reference), all timed by
    ``immunize()`` itself after one warm-up call per size;
(b) protection: each one's loss reduction ``1 - loss_after / loss_before`` as a
    share of PGD's, and the edit SSIM (immunized photo's edit vs the clean photo's
    edit, lower = more disrupted; ``sdk.evaluate.edit_similarity``) as a gap to PGD's,
    with same-ε uniform noise as the floor (``same_eps_noise``);
(c) the plugin: one re-immunizing check of a 128 px photo signed as protected
    against v1 only (``ImmunizationCheck.prepare_call``), with and without the
    immunizer's start;
(d) the catalog job: images per second with the target's default (warm start) and
    with ``warm_start=False`` (today's 100 steps), local engine;
(e) transfer: each bundled version's generator (those that ship one) applied in one
    pass to every version's loss, beside 100-step PGD against that version;
(f) the SD 1.5 VAE architecture (random weights) at 512 px: the generator's pass
    (width 32, the bundled one's) against one PGD iteration of that encoder.

    .venv/bin/python bench/amortized.py [--model tiny-ldm@3] [--sizes 128,256,512]
        [--finish 5,10] [--parts abcdef] [--job-images 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from photoimmune.sdk.evaluate import edit_similarity, same_eps_noise
from photoimmune.sdk.immunization import immunize
from photoimmune.sdk.models import load_pipeline
from photoimmune.sdk.models.pipelines import edit_image
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import build_target

PHOTOS = ("chelsea.png", "coffee.png")  # held out from every training run
PROMPT = "a photo of a cat"


def part_ab(args, target, pipe) -> None:
    finishes = [int(k) for k in args.finish.split(",")]
    print(f"\n(a, b) {target.ref}, ε 8/255, {', '.join(PHOTOS)}; ratios to 100-step PGD")
    header = f"{'size':>5} {'schedule':>14} {'ms/img':>9} {'speed-up':>9} {'loss cut':>9}"
    print(header + f" {'share':>6} {'edit SSIM':>9} {'gap':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        photos = [sample_pixels(name, size) for name in PHOTOS]
        immunize(photos[0], target, method="amortized")  # warm-up at this size
        runs = {
            "PGD 100": dict(steps=100, warm_start=False, momentum=0.0),  # PhotoGuard's loop
            "one pass": dict(method="amortized"),
            **{f"warm + {k}": dict(steps=k, warm_start=True) for k in finishes},
            f"cold {finishes[-1]}": dict(steps=finishes[-1], warm_start=False, momentum=0.0),
            "cold default": dict(warm_start=False),  # momentum, a share of the steps
        }
        rows = {
            name: [immunize(p, target, seed=0, **kw) for p in photos] for name, kw in runs.items()
        }
        clean_edits = [edit_image(pipe, p, PROMPT, seed=0) for p in photos]
        rng = np.random.default_rng(0)
        noise = statistics.fmean(
            edit_similarity(edit_image(pipe, same_eps_noise(p, "8/255", rng), PROMPT), e)[0]
            for p, e in zip(photos, clean_edits, strict=True)
        )
        ref_ms = statistics.fmean(r.seconds for r in rows["PGD 100"]) * 1000
        ref_cut = statistics.fmean(r.protections[0].loss_cut for r in rows["PGD 100"])
        ref_ssim = None
        for name, results in rows.items():
            ms = statistics.fmean(r.seconds for r in results) * 1000
            cut = statistics.fmean(r.protections[0].loss_cut for r in results)
            ssim = statistics.fmean(
                edit_similarity(edit_image(pipe, r.pixels, PROMPT, seed=0), e)[0]
                for r, e in zip(results, clean_edits, strict=True)
            )
            ref_ssim = ssim if ref_ssim is None else ref_ssim
            worst = max(r.max_abs_delta for r in results)
            print(
                f"{size:>5} {name:>14} {ms:9.1f} {ref_ms / ms:8.1f}x {cut:9.3f} "
                f"{cut / ref_cut:6.2f} {ssim:9.4f} {ssim - ref_ssim:+7.4f}  max|δ| {worst}/255"
            )
        print(f"{size:>5} {'same-ε noise':>14} {'':>9} {'':>9} {'':>9} {'':>6} {noise:9.4f}")


def part_c(args) -> None:
    import photoimmune.diffusers_plugin  # noqa: F401  (adds enable_immunization_check)
    from photoimmune.registry.admin import local_registry
    from photoimmune.sdk import sign_pixels
    from photoimmune.sdk.keys import init_keys
    from photoimmune.sdk.models.bundled import VENDOR

    work = Path(tempfile.mkdtemp(prefix="bench-amortized-"))
    client = local_registry(work / "registry", ["tiny-ldm@1", args.model])
    keys = init_keys(work / "keys")
    # A photo protected against v1 only: the check re-immunizes it for this version.
    photo = sample_pixels("chelsea.png", 128)
    old = immunize(photo, client.get(f"{VENDOR}/tiny-ldm@1"), steps=1, warm_start=False)
    path = work / "outdated.png"
    path.write_bytes(sign_pixels(old.pixels, old.protections, keys.signer("publisher")))
    pipe = load_pipeline(args.model)
    print(f"\n(c) plugin: re-immunizing check of a v1-protected 128 px photo ({args.model})")
    times = {}
    for name, steps in (("PGD 100 (no immunizer)", 100), ("immunizer start (default)", None)):
        pipe.enable_immunization_check(
            client, trust=keys.ca_cert, signer=keys.signer("vendor"), steps=steps
        )
        check = pipe._immunization_check
        call = type(pipe).__mro__[1].__call__
        target = check.target  # fingerprints and registry: once per pipeline, not timed
        if steps is not None:  # the reference: the target without its immunizer's start
            check._target = target.model_copy(update={"immunizer": None})
        started = time.perf_counter()
        check.prepare_call(call, (PROMPT,), {"image": str(path)})
        times[name] = time.perf_counter() - started
        image = pipe.immunization_report.images[0]
        print(f"{name:>28}: {times[name] * 1000:8.1f} ms  ({image.action})")
        pipe.disable_immunization_check()
    first, second = times.values()
    print(f"{'speed-up':>28}: {first / second:8.1f}x")


def part_d(args) -> None:
    from photoimmune.registry.admin import local_registry
    from photoimmune.sdk.io import save_image
    from photoimmune.sdk.jobs import Catalog, JobSettings, run
    from photoimmune.sdk.keys import init_keys

    work = Path(tempfile.mkdtemp(prefix="bench-amortized-jobs-"))
    names = ("astronaut.png", "motorcycle_left.png", "horse.png", "chelsea.png", "coffee.png")
    (work / "photos").mkdir()
    for i in range(args.job_images):
        pixels = sample_pixels(names[i % len(names)], 132 + 8 * (i // len(names)))
        save_image(np.ascontiguousarray(pixels[:132, :132]), work / "photos" / f"p{i:03d}.png")
    client = local_registry(work / "registry", [args.model])
    keys = init_keys(work / "keys")
    print(f"\n(d) catalog job, {args.job_images} images of 132 px, local engine")
    rates = {}
    for name, settings in (
        ("today (PGD 100, no start)", JobSettings(warm_start=False, steps=100)),
        ("default (immunizer start)", JobSettings()),
    ):
        catalog = Catalog(work / f"{len(rates)}.db")
        catalog.add([work / "photos"])
        started = time.perf_counter()
        summary = run(
            catalog,
            client,
            [f"photoimmune/{args.model.split('@')[0]}"],
            out_dir=work / f"out{len(rates)}",
            signer=keys.signer("publisher"),
            trust=keys.trust_anchor_pem(),
            settings=settings,
        )
        rates[name] = len(summary.done) / (time.perf_counter() - started)
        print(f"{name:>28}: {rates[name]:6.2f} images/s  (steps {summary.steps})")
    first, second = rates.values()
    print(f"{'throughput ratio':>28}: {second / first:6.1f}x")


def part_e(args) -> None:
    from photoimmune.sdk.attacks import EncoderAttack
    from photoimmune.sdk.immunizer import immunizer_delta
    from photoimmune.sdk.io import pixels_to_tensor
    from photoimmune.sdk.models.bundled import bundled_models

    targets = {m.name: build_target(m.name) for m in bundled_models()}
    print("\n(e) transfer: loss cut (1 - after/before) on each version, chelsea + coffee")
    for size in (int(s) for s in args.sizes.split(",")):
        x = pixels_to_tensor([sample_pixels(n, size) for n in PHOTOS])
        for scored, target in targets.items():
            attack = EncoderAttack(
                target.vae_encoder(),
                target.tensor(target.encoder.x_target),
                resolution=target.resolution,
                steps=0,
                quant_steps=0,
            )
            pgd = EncoderAttack(
                target.vae_encoder(),
                target.tensor(target.encoder.x_target),
                resolution=target.resolution,
                steps=100,
            ).perturb(x)
            cuts = {"PGD 100": float(pgd.loss_cut.mean())}
            for source, generator in targets.items():
                if generator.immunizer is None:  # this version ships no generator
                    continue
                result = attack.perturb(x, init=immunizer_delta(generator, x, 8 / 255))
                cuts[f"{source}'s pass"] = float(result.loss_cut.mean())
            shown = ", ".join(f"{name} {cut:.3f}" for name, cut in cuts.items())
            print(f"{size:>5} px, loss cut on {scored}: {shown}")


def part_f(args) -> None:
    from architectures import sd15_vae  # bench/ is on sys.path when this script runs

    from photoimmune.sdk.attacks import EncoderAttack, VAEEncoder, autocast_to, fast_dtype
    from photoimmune.sdk.immunizer import ImmunizerNet

    net = ImmunizerNet(32).eval().requires_grad_(False)
    encoder = VAEEncoder(sd15_vae())
    attack = EncoderAttack(encoder, steps=1, quant_steps=0, random_start=False)
    x = torch.rand(1, 3, 512, 512)
    # immunize() runs the pass in bf16 where the CPU has it natively (immunizer_delta).
    dtype = fast_dtype("cpu")
    with torch.no_grad(), autocast_to("cpu", dtype):
        net(x)
        started = time.perf_counter()
        net(x)
    pass_s = time.perf_counter() - started
    attack.perturb(x)  # warm-up
    started = time.perf_counter()
    attack.perturb(x)
    step_s = time.perf_counter() - started  # one step, plus its two loss evaluations
    print("\n(f) SD 1.5 VAE architecture (random weights), 512 px, CPU")
    precision = "bf16" if dtype is not None else "float32"
    print(f"generator pass ({precision}) {pass_s * 1000:.0f} ms", end="; ")
    print(f"one PGD iteration {step_s * 1000:.0f} ms")
    print(f"100-step PGD ≈ {100 * step_s:.0f} s: the pass is {100 * step_s / pass_s:.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ldm@3")
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--finish", default="5,10")
    parser.add_argument("--parts", default="abcdef")
    parser.add_argument("--job-images", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; all times on this machine's CPU")
    if "a" in args.parts or "b" in args.parts:
        part_ab(args, build_target(args.model), load_pipeline(args.model))
    if "c" in args.parts:
        part_c(args)
    if "d" in args.parts:
        part_d(args)
    if "e" in args.parts:
        part_e(args)
    if "f" in args.parts:
        part_f(args)


if __name__ == "__main__":
    main()
