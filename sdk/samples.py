"""The sample photos that ship inside scikit-image, used by the demo, tests and training.

They are real photos available offline on every install (``skimage/data/*.png``),
so nothing has to be downloaded to try photoimmune.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .io import load_image

#: What trainers of one-pass immunizers and honouring encoders add to the model's own
#: training photos: scikit-image's textures and grayscale photos, so they also meet
#: fine texture, flat regions and gray images. Never chelsea, coffee or camera, the
#: photos benches score on.
EXTRA_PHOTOS: tuple[str, ...] = ("brick.png", "grass.png", "gravel.png", "coins.png", "moon.png")


def sample_dir() -> Path:
    """The folder holding scikit-image's bundled photos."""
    from skimage import data

    return Path(data.__file__).parent


def sample_path(name: str) -> Path:
    """Path of one bundled photo, e.g. ``sample_path("chelsea.png")``.

    Example:
        >>> sample_path("chelsea.png").name
        'chelsea.png'
    """
    path = sample_dir() / name
    if not path.is_file():
        available = sorted(p.name for p in sample_dir().glob("*.png"))
        raise InputError(f"no sample photo {name!r}; choose one of {', '.join(available)}")
    return path


def sample_pixels(name: str, size: int | None = None) -> np.ndarray:
    """A bundled photo as uint8 RGB; with ``size``, centre-cropped square and resized.

    Example:
        >>> sample_pixels("coffee.png", 128).shape
        (128, 128, 3)
    """
    pixels = load_image(sample_path(name)).pixels
    if size is None:
        return pixels
    return square_resize(pixels, size)


def square_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (Lanczos)."""
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(pixels[top : top + side, left : left + side]))
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


#: What :func:`write_samples` writes: the names the guides use, and the photo behind each.
GUIDE_SAMPLES = {
    "photo.jpg": "chelsea.png",
    "portrait.png": "astronaut.png",
    "photos/coffee.jpg": "coffee.png",
    "photos/motorcycle.jpg": "motorcycle_right.png",
}


def write_samples(folder: str | Path = ".", size: int = 64) -> list[Path]:
    """Write the photos the guides use (:data:`GUIDE_SAMPLES`) into ``folder``; return them.

    Square crops at ``size`` px (half the bundled model's resolution), small so that
    the guides' examples show the mechanics quickly. Files that already exist are
    kept, so each guide can start with this step, in any order, in one folder.

    Example:
        >>> [p.name for p in write_samples("guide")]
        ['photo.jpg', 'portrait.png', 'coffee.jpg', 'motorcycle.jpg']
    """
    from .io import save_image

    written = []
    for name, sample in GUIDE_SAMPLES.items():
        path = Path(folder) / name
        if not path.exists():  # never replace a photo: it may be the reader's own by now
            save_image(sample_pixels(sample, size), path)
        written.append(path)
    return written


if __name__ == "__main__":  # python -m photoimmune.sdk.samples [FOLDER]: the guides' first step
    import sys

    for path in write_samples(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(path)
