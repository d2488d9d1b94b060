"""Bounded image decoding: every image file the package reads goes through :func:`decode_image`.

The rule (docs/how-to/datasets.md, "Large images"):

1. An image whose header declares more than ``max_pixels`` pixels (default 100 million,
   ``$OVERINTERP_MAX_IMAGE_PIXELS``) is refused before any pixel is decoded: the error
   names the file, its size and the limit.
2. An image whose longer side exceeds ``max_side`` (default 1024 pixels,
   ``$OVERINTERP_MAX_IMAGE_SIDE``; ``0``: no cap) is downscaled while it is decoded,
   keeping its aspect ratio (JPEG: decoded at 1/2, 1/4 or 1/8 scale by the decoder itself;
   other formats: decoded once, then reduced with a box filter): a folder of photos costs
   at most ``3 × max_side²`` bytes per image in memory, whatever their size on disk.
   Each downscaling is reported once per process on stderr.
3. Arrays (``.npy``/``.npz``) declare their shape in their header: one that would not fit
   in the memory this machine has available is refused before it is read.
4. A folder of images is held at most in half the memory available (stacking copies it once):
   one too large is refused while it is read (:class:`MemoryBudget`), not by the OOM killer.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from overinterp._memory import available_memory, check_fits, human_bytes
from overinterp.errors import UserInputError

__all__ = [
    "decode_image",
    "check_image_size",
    "image_limits",
    "check_array_file",
    "MemoryBudget",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
]

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_SIDE = 1024
_reported: set[str] = set()


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UserInputError(f"${name}={text!r}: expected a whole number") from None
    if value < 0:
        raise UserInputError(f"${name}={text!r}: expected a whole number >= 0")
    return value


def image_limits(max_pixels: int | None = None, max_side: int | None = None) -> tuple[int, int]:
    """``(max_pixels, max_side)``: the arguments, else the environment, else the defaults (``0``: no limit)."""
    pixels = _env_int("OVERINTERP_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS) if max_pixels is None else max_pixels
    side = _env_int("OVERINTERP_MAX_IMAGE_SIDE", DEFAULT_MAX_SIDE) if max_side is None else max_side
    return int(pixels), int(side)


def check_image_size(im: Any, label: str, max_pixels: int | None = None) -> None:
    """Refuse an opened (not yet decoded) PIL image larger than ``max_pixels``."""
    limit, _ = image_limits(max_pixels, None)
    w, h = im.size
    if limit and w * h > limit:
        raise UserInputError(
            f"image {label} is {w}×{h} = {w * h / 1e6:.1f} million pixels, over the limit of "
            f"{limit / 1e6:g} million (raise $OVERINTERP_MAX_IMAGE_PIXELS to read it; it was not decoded)"
        )


def decode_image(
    source: bytes | str | os.PathLike[str],
    label: str | None = None,
    *,
    max_pixels: int | None = None,
    max_side: int | None = None,
) -> np.ndarray:
    """One image file (a path or its bytes) → ``(H, W, 3)`` uint8 RGB, bounded as the module doc says."""
    from PIL import Image

    label = label or str(source if not isinstance(source, bytes) else "<bytes>")
    pixels, side = image_limits(max_pixels, max_side)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with Image.open(fp) as im:
            check_image_size(im, label, pixels)
            w, h = im.size
            if side and max(w, h) > side:
                scale = side / max(w, h)
                target = (max(1, round(w * scale)), max(1, round(h * scale)))
                im.draft("RGB", target)  # JPEG: the decoder itself scales down
                small = im.convert("RGB") if im.mode not in ("RGB", "L", "P", "RGBA") else im
                small = small.resize(target, Image.Resampling.BOX, reducing_gap=2.0)
                _report(label, (w, h), target)
                return np.array(small.convert("RGB"))
            return np.array(im.convert("RGB"))
    except UserInputError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"no image at {label}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise ValueError(f"cannot decode image {label}: {type(exc).__name__}: {exc}") from exc


class MemoryBudget:
    """Decoded images held so far, refused past half the memory available when it was made (thread-safe)."""

    def __init__(self, what: str, count: int) -> None:
        self.what, self.count = what, count
        self.limit, self.held, self._lock = available_memory() // 2, 0, threading.Lock()

    def hold(self, array: np.ndarray) -> np.ndarray:
        """``array``, counted; :class:`~overinterp.errors.UserInputError` once the images exceed the budget."""
        with self._lock:
            self.held += array.nbytes
            if self.held > self.limit:
                raise UserInputError(
                    f"the {self.count} images of {self.what} need more than the {human_bytes(self.limit)} of memory "
                    "this machine can hold them in (half of what is available); read fewer (limit) or smaller "
                    "ones (size, $OVERINTERP_MAX_IMAGE_SIDE)"
                )
        return array


def _report(label: str, size: tuple[int, int], target: tuple[int, int]) -> None:
    folder = str(Path(label).parent)
    if folder in _reported:
        return
    _reported.add(folder)
    print(
        f"note: image {label} is {size[0]}×{size[1]}; images over the side limit are decoded downscaled "
        f"(here to {target[0]}×{target[1]}; $OVERINTERP_MAX_IMAGE_SIDE sets the limit, 0 = none)",
        file=sys.stderr,
    )


def check_array_file(path: str | os.PathLike[str]) -> None:
    """Refuse a ``.npy``/``.npz`` file that is not one, or whose arrays would not fit in memory,
    from its headers alone (nothing is read)."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".npz":
            with zipfile.ZipFile(p) as z:
                total = 0
                for info in z.infolist():
                    if info.filename.endswith(".npy"):
                        with z.open(info) as fh:
                            total += _npy_bytes(fh)
        else:
            with open(p, "rb") as fh:
                total = _npy_bytes(fh)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserInputError(f"cannot read {p}: not a valid {p.suffix.lower()} file ({type(exc).__name__}: {exc})")
    check_fits(total, f"the arrays of {p}")


def _npy_bytes(fh: Any) -> int:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(fh)
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize
