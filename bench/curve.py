"""Where each version sits on the fidelity-protection curve (issue 23): a table and a picture.

For each model (a bundled name or a release folder) and each photo size, on photos no
model trained on, with the check's edits (img2img at strength 0.5, 20 steps, guidance
7.5, "a photo", seed 1234):

- fidelity: the mean SSIM(edit of the clean photo, photo);
- protection: the mean SSIM gap over same-ε noise of ``immunize``'s defaults at 8/255
  (seed 0): SSIM(edit of the noisy copy, clean edit) - SSIM(edit of the immunized one,
  clean edit).

A release folder that ships no one-pass immunizer runs ``--pass-from``'s defaults (its
budgets and pass, as ``bench/effect_ceiling.py --pass-from`` lends them); bundled versions
and folders with a pass of their own run their own. It writes ``curve.png``: one point per
model and size, a colour per model, with issue 23's bars (fidelity ≥ 0.5, gap ≥ 0.15)
shaded. The default photos are the seven that neither a model nor a one-pass immunizer
trained on.

    .venv/bin/python bench/curve.py --models tiny-ldm@1 tiny-ldm@3 /tmp/tiny-ldm-5 \\
        [--pass-from tiny-ldm@3] [--sizes 128 256] [--photos chelsea.png ...] [-o out/curve]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from effect_ceiling import EDIT, Session, gap_over_noise, lent_target, ssim

from photoimmune.sdk import immunize
from photoimmune.sdk.models import resolve_model
from photoimmune.sdk.pictures import scatter_chart
from photoimmune.sdk.samples import sample_pixels
from photoimmune.sdk.targets import BUNDLED_IMMUNIZER

UNSEEN = (
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "clock_motion.png",
    "page.png",
    "cell.png",
    "microaneurysms.png",
)
GOAL = (0.5, 0.15)  # issue 23: clean edit SSIM to the photo, and the gap over noise


def measure(model: str, size: int, photos: list[str], pass_from: str | None) -> tuple[float, float]:
    """Mean fidelity and mean gap of ``model`` at ``size``, printing each photo's."""
    session = Session(model)
    folder = resolve_model(model)
    # A candidate folder with no pass of its own runs --pass-from's; a bundled version
    # runs its own defaults, pass or none.
    own_pass = (folder / BUNDLED_IMMUNIZER / "spec.json").is_file()
    lent = pass_from and Path(model).is_dir() and not own_pass
    target = lent_target(model, pass_from) if lent else model
    fidelities, gaps = [], []
    for name in photos:
        photo = sample_pixels(name, size)
        clean = session.edit(photo, 0.5)
        immunized = immunize(photo, target, eps="8/255", seed=0).pixels
        fidelities.append(ssim(clean, photo))
        gaps.append(gap_over_noise(session, photo, immunized, 0.5, 8, clean))
        print(f"  {name:20} fidelity {fidelities[-1]:.3f}  gap {gaps[-1]:.3f}", flush=True)
    return statistics.mean(fidelities), statistics.mean(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-ldm@3"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--photos", nargs="+", default=list(UNSEEN))
    parser.add_argument(
        "--pass-from", help="a bundled version whose budgets and pass a folder without one runs"
    )
    parser.add_argument("-o", "--out", type=Path, default=Path("out/curve"))
    args = parser.parse_args()
    print(f"edits {EDIT} at strength 0.5; immunize's defaults at 8/255, seed 0")
    series: dict[str, dict[str, tuple[float, float]]] = {}
    for model in args.models:
        for size in args.sizes:
            started = time.perf_counter()
            print(f"{model}, {size} px:")
            point = measure(model, size, args.photos, args.pass_from)
            series.setdefault(model, {})[f"{size} px"] = point
            print(f"  ({time.perf_counter() - started:.0f} s)")
    print(f"\n{'model, size':34}{'fidelity':>10}{'gap':>8}   goal: {GOAL[0]} and {GOAL[1]}")
    for model, points in series.items():
        for size, (fidelity, gap) in points.items():
            met = "both" if fidelity >= GOAL[0] and gap >= GOAL[1] else "not both"
            print(f"{model + ', ' + size:34}{fidelity:10.3f}{gap:8.3f}   {met}")
    args.out.mkdir(parents=True, exist_ok=True)
    chart = scatter_chart(
        series,
        x_label="SSIM(clean edit, photo), strength 0.5",
        y_label="SSIM gap over same-eps noise, immunize's defaults at 8/255",
        goal=GOAL,
        title=f"Fidelity and protection on {len(args.photos)} unseen photos (issue 23)",
    )
    chart.save(args.out / "curve.png")
    print(f"wrote {args.out / 'curve.png'}")


if __name__ == "__main__":
    main()
