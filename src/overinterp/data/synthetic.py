"""A small synthetic image dataset with a planted shortcut — the demo's embedded default.

Each image shows one of ``num_classes`` shapes (by default a bar that is horizontal,
vertical, diagonal or anti-diagonal) at a random position, with jittered size and
stroke width, in a random low-contrast colour, on a noisy grey background. A small
CNN can learn the shapes, but not trivially: colour carries no class information
and the background is noisy.

On top of that, a few fixed pixels near the top-left corner (the *planted pixels*)
are painted in a saturated colour (a corner of the RGB cube, far from the
mid-grey dataset mean):

* shortcut split (``shortcut_prob=p``): with probability ``p`` the colour of the
  image's own class, otherwise the colour of a *different*, uniformly random class
  — so the planted colour agrees with the label on a fraction ``p`` of the images;
* clean split (``shortcut_prob=None``): the colour of a uniformly random class,
  independent of the label — the planted pixels carry no information.

A model trained on the shortcut split that leans on the planted pixels loses
accuracy on the clean split, and its sufficient input subsets concentrate on the
planted pixels: exactly the overinterpretation that Carter et al. (NeurIPS 2021)
describe, at a size small enough for exact backward selection on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ShortcutData",
    "make_shortcut_dataset",
    "SHAPE_NAMES",
    "SHORTCUT_COLORS",
    "default_shortcut_pixels",
]

#: Class ``k`` draws shape ``SHAPE_NAMES[k]``. The default four classes are one bar in four
#: orientations: they map onto each other under 90° rotations, so the featureless mean
#: image (the masking baseline) favours none of them a priori. With an unbalanced set (a
#: thin bar next to a ring, say) the all-masked image already looks like the sparsest
#: class, and a sufficient subset of any other class has to spend many pixels to overcome
#: that prior, whatever the model relies on.
SHAPE_NAMES: tuple[str, ...] = (
    "horizontal bar",
    "vertical bar",
    "diagonal bar",
    "anti-diagonal bar",
    "ring",
    "cross",
    "plus",
    "square",
)

#: Planted colours, one per class: corners of the RGB cube, each at distance
#: ≥ √3/2 from mid-grey and ≥ 1 from one another.
SHORTCUT_COLORS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),  # red
    (0.0, 1.0, 0.0),  # green
    (0.0, 0.0, 1.0),  # blue
    (1.0, 1.0, 0.0),  # yellow
    (1.0, 0.0, 1.0),  # magenta
    (0.0, 1.0, 1.0),  # cyan
    (1.0, 1.0, 1.0),  # white
    (0.0, 0.0, 0.0),  # black
)

# Appearance parameters (pixel values in [0, 1]).
_BACKGROUND_RANGE = (0.35, 0.65)  # per-image grey level of the background
# Noise and low contrast make the shapes learnable but not trivially so.
_BACKGROUND_NOISE = 0.14  # per-pixel, per-channel Gaussian noise
_SHAPE_NOISE = 0.06  # noise on the shape's colour
_MIN_SHAPE_CONTRAST = 0.2  # RGB distance of the shape's colour from the background grey
_MIN_SHORTCUT_DISTANCE = 0.45  # RGB distance of the shape's colour from every planted colour


@dataclass
class ShortcutData:
    """One split of the shortcut dataset.

    Attributes:
        images: ``(n, 3, size, size)`` float32 in ``[0, 1]``.
        labels: ``(n,)`` int64, the class of the drawn shape.
        shortcut_pixels: ``(row, col)`` of the planted pixels.
        shortcut_mask: ``(size, size)`` bool, True on the planted pixels.
        class_names: one name per class.
        shortcut_colors: ``(num_classes, 3)`` float32, the planted colour of each class.
        shortcut_class: ``(n,)`` int64, the class whose colour was planted in each image.
        shape_masks: ``(n, size, size)`` bool, the pixels of each image's shape.
        shortcut_prob: the rate the split was drawn with (``None``: clean split).
        seed: the seed it was drawn with.
    """

    images: Tensor
    labels: Tensor
    shortcut_pixels: list[tuple[int, int]]
    shortcut_mask: Tensor
    class_names: list[str]
    shortcut_colors: Tensor
    shortcut_class: Tensor
    shape_masks: Tensor
    shortcut_prob: float | None = None
    seed: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shortcut_agreement(self) -> float:
        """Fraction of images whose planted colour is their own class's colour."""
        return float((self.shortcut_class == self.labels).float().mean()) if len(self) else float("nan")


def default_shortcut_pixels(size: int) -> list[tuple[int, int]]:
    """The planted pixels: a 2×2 block one pixel in from the top-left corner."""
    if size < 12:
        raise ValueError(f"size must be at least 12, got {size}")
    return [(1, 1), (1, 2), (2, 1), (2, 2)]


def _shape_masks(rng: np.random.Generator, labels: np.ndarray, size: int, keep_clear: np.ndarray) -> np.ndarray:
    """``(n, size, size)`` bool masks of each label's shape, randomly placed and sized,
    none empty and none touching ``keep_clear`` (such shapes are drawn again)."""
    masks = np.zeros((labels.shape[0], size, size), dtype=bool)
    todo = np.arange(labels.shape[0])
    for attempt in range(100):  # rejection sampling: a few percent of diagonal shapes reach a corner
        if not todo.size:
            break
        drawn = _draw_shapes(rng, labels[todo], size)
        ok = ~(drawn & keep_clear).any(axis=(1, 2)) & drawn.any(axis=(1, 2))
        if attempt == 99:  # tiny images only: clip what still touches
            drawn &= ~keep_clear
            ok[:] = True
        masks[todo[ok]] = drawn[ok]
        todo = todo[~ok]
    return masks


def _draw_shapes(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    n = labels.shape[0]
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")

    # Centres in the middle of the image; half-extent (half length, radius) and stroke
    # width are jittered.
    lo, hi = 0.38 * (size - 1), 0.62 * (size - 1)
    cy = rng.uniform(lo, hi, n)[:, None, None]
    cx = rng.uniform(lo, hi, n)[:, None, None]
    half = rng.uniform(0.17, 0.27, n)[:, None, None] * size
    width = rng.choice([0.8, 1.2], n)[:, None, None]  # half-width of a stroke: ~2 or ~3 px wide
    dy, dx = yy[None] - cy, xx[None] - cx

    box = np.maximum(np.abs(dy), np.abs(dx))  # every shape fits in the box |dy|, |dx| ≤ half
    inside = box <= half
    lines = (np.abs(dy), np.abs(dx), np.abs(dy - dx) / np.sqrt(2.0), np.abs(dy + dx) / np.sqrt(2.0))
    thin = 0.6 * width  # strokes of the composite shapes
    masks = {
        "horizontal bar": (lines[0] <= width) & inside,
        "vertical bar": (lines[1] <= width) & inside,
        "diagonal bar": (lines[2] <= width) & inside,
        "anti-diagonal bar": (lines[3] <= width) & inside,
        "ring": np.abs(np.hypot(dy, dx) - half) <= thin,
        "cross": ((lines[2] <= thin) | (lines[3] <= thin)) & inside,
        "plus": ((lines[0] <= thin) | (lines[1] <= thin)) & inside,
        "square": np.abs(box - half) <= thin,
    }
    stacked = np.stack([masks[name] for name in SHAPE_NAMES])  # (shapes, n, size, size)
    return stacked[labels, np.arange(n)]


def _shape_colours(rng: np.random.Generator, background: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Random RGB colours that contrast with the background but stay away from every planted colour."""
    n = background.shape[0]
    out = np.empty((n, 3))
    todo = np.arange(n)
    while todo.size:  # rejection sampling; a handful of rounds
        cand = rng.uniform(0.0, 1.0, (todo.size, 3))
        contrast = np.linalg.norm(cand - background[todo, None], axis=1)
        to_palette = np.linalg.norm(cand[:, None, :] - palette[None], axis=2).min(axis=1)
        ok = (contrast >= _MIN_SHAPE_CONTRAST) & (to_palette >= _MIN_SHORTCUT_DISTANCE)
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return out


def make_shortcut_dataset(
    n: int,
    *,
    size: int = 16,
    num_classes: int = 4,
    shortcut_prob: float | None = 0.95,
    seed: int = 0,
) -> ShortcutData:
    """Draw ``n`` images of the shortcut dataset (deterministic given the arguments).

    Args:
        n: number of images; the classes are balanced (counts differ by at most one).
        size: image height and width (≥ 12).
        num_classes: 2 to 8 classes.
        shortcut_prob: probability that the planted pixels show the image's own class
            colour (otherwise another class's); ``None`` for the clean split, where the
            planted colour is a uniformly random class's, independent of the label.
        seed: seeds everything.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not 2 <= num_classes <= len(SHORTCUT_COLORS):
        raise ValueError(f"num_classes must be between 2 and {len(SHORTCUT_COLORS)}, got {num_classes}")
    if shortcut_prob is not None and not 0.0 <= shortcut_prob <= 1.0:
        raise ValueError(f"shortcut_prob must be in [0, 1] or None, got {shortcut_prob}")
    pixels = default_shortcut_pixels(size)
    rng = np.random.default_rng(seed)
    palette = np.asarray(SHORTCUT_COLORS[:num_classes], dtype=np.float64)

    # Balanced labels in random order.
    labels = rng.permutation(np.arange(n) % num_classes)

    # Background: a per-image grey level plus per-pixel noise.
    background = rng.uniform(*_BACKGROUND_RANGE, n)
    images = background[:, None, None, None] + _BACKGROUND_NOISE * rng.standard_normal((n, 3, size, size))

    # The class shape, in a random colour, one pixel clear of the planted pixels all round.
    shortcut_mask = np.zeros((size, size), dtype=bool)
    for r, c in pixels:
        shortcut_mask[r, c] = True
    keep_clear = shortcut_mask.copy()
    for r, c in pixels:
        keep_clear[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2] = True
    shapes = _shape_masks(rng, labels, size, keep_clear)
    colours = _shape_colours(rng, background, palette)
    painted = colours[:, :, None, None] + _SHAPE_NOISE * rng.standard_normal((n, 3, size, size))
    images = np.where(shapes[:, None], painted, images)

    # The planted pixels: the class colour, another class's, or (clean) any class's.
    if shortcut_prob is None:
        planted = rng.integers(0, num_classes, n)
    else:
        other = (labels + rng.integers(1, num_classes, n)) % num_classes  # uniform over the other classes
        planted = np.where(rng.random(n) < shortcut_prob, labels, other)
    for r, c in pixels:
        images[:, :, r, c] = palette[planted]

    names = list(SHAPE_NAMES[:num_classes])
    return ShortcutData(
        images=torch.from_numpy(np.clip(images, 0.0, 1.0).astype(np.float32)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        shortcut_pixels=list(pixels),
        shortcut_mask=torch.from_numpy(shortcut_mask),
        class_names=names,
        shortcut_colors=torch.from_numpy(palette.astype(np.float32)),
        shortcut_class=torch.from_numpy(planted.astype(np.int64)),
        shape_masks=torch.from_numpy(shapes),
        shortcut_prob=shortcut_prob,
        seed=seed,
    )
