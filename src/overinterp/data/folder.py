"""Image folders in the ImageFolder layout: ``<root>[/<split>]/<class>/<image>``.

``root`` is a folder or a ``.zip`` file with the same layout inside (read
directly, nothing is extracted; a single top-level folder in the zip, such as
``cifar10-jpeg/``, is entered automatically). Classes are the class
sub-folder names, sorted, and labels their positions in that list.

When ``root`` holds several splits (``train/``, ``test/``, …), the class list
is taken from all of them and every split must have every class: a class
missing from one split would silently shift the labels, so it is an error
naming the folder where it was expected. Files that are not images are
ignored; an image that cannot be decoded is an error naming its path.

**Flat folders** (image files and no sub-folders) are read unlabelled: labels ``-1``,
``classes`` ``None``, ``meta["unlabelled"] = True``.

**Sizes.** Without ``size`` all images must have one size. With ``size`` ``(H, W)`` every image
is brought to it by one rule, :func:`fit_image`: scaled (antialiased bilinear) so that it
covers ``H × W`` with its aspect ratio kept - the shorter side meets the target - and then
centre-cropped; photos of any size become the model's input size (e.g. 512×341 → 224×224:
scaled to 336×224, the middle 224 columns kept).
"""

from __future__ import annotations

import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch

from overinterp.data.base import LabeledImages, from_hwc
from overinterp.data.decode import MemoryBudget, decode_image

__all__ = ["load_image_folder", "fit_image", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class _Tree:
    """A read-only view of a folder or a zip file: child folders, files, bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        self.dirs: dict[str, set[str]] = {}
        self.files: dict[str, list[str]] = {}
        if root.is_file():
            try:
                self.zip = zipfile.ZipFile(root)
            except zipfile.BadZipFile as exc:
                raise ValueError(f"{root} is neither a folder nor a readable zip file: {exc}") from exc
            for name in self.zip.namelist():
                if name.endswith("/") or name.startswith("__MACOSX/"):
                    continue
                parts = PurePosixPath(name).parts
                for depth in range(len(parts) - 1):
                    parent = "/".join(parts[:depth])
                    self.dirs.setdefault(parent, set()).add(parts[depth])
                self.files.setdefault("/".join(parts[:-1]), []).append(parts[-1])

    def label(self, rel: str) -> str:
        if self.zip is not None:
            return f"{self.root}::{rel}" if rel else str(self.root)
        return str(self.root / rel) if rel else str(self.root)

    def subdirs(self, rel: str) -> list[str]:
        if self.zip is not None:
            return sorted(self.dirs.get(rel, ()))
        base = self.root / rel
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def is_dir(self, rel: str) -> bool:
        if self.zip is not None:
            return rel in self.dirs or rel in self.files
        return (self.root / rel).is_dir()

    def image_files(self, rel: str) -> list[str]:
        if self.zip is not None:
            names = self.files.get(rel, [])
        else:
            names = [p.name for p in (self.root / rel).iterdir() if p.is_file()]
        return sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))

    def reader(self) -> Callable[[str], bytes]:
        if self.zip is not None:
            zf = self.zip
            return lambda rel: zf.read(rel)
        return lambda rel: (self.root / rel).read_bytes()


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _decode(data: bytes, label: str) -> np.ndarray:
    return decode_image(data, label)


def fit_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(h, w, 3)`` uint8 → ``(H, W, 3)``: scaled to cover ``H × W`` (aspect ratio kept, antialiased
    bilinear), then centre-cropped (the module doc's rule)."""
    from PIL import Image

    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    scale = max(th / h, tw / w)
    sh, sw = max(th, round(h * scale)), max(tw, round(w * scale))
    im = Image.fromarray(image).resize((sw, sh), Image.Resampling.BILINEAR, reducing_gap=None)
    top, left = (sh - th) // 2, (sw - tw) // 2
    return np.asarray(im.crop((left, top, left + tw, top + th)))


def load_image_folder(
    root: str | Path,
    split: str | None = None,
    *,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    threads: int = 2,
    name: str | None = None,
    size: int | tuple[int, int] | None = None,
) -> LabeledImages:
    """Read an ImageFolder-layout dataset (folder or zip) into memory.

    Args:
        root: a folder or a ``.zip``.
        split: sub-folder to read (e.g. ``"train"``, ``"test"``); ``None``: ``root``
            itself holds the class folders.
        classes: the expected class names in label order; default: the sorted
            class folders (of all splits, see the module doc). Any expected class
            without a folder is an error.
        limit: read only the first ``limit`` images (in label, then file-name order).
        threads: decoding threads (PIL releases the GIL while decoding).
        name: dataset name recorded in the result (default ``folder:<split>``).
        size: bring every image to ``size`` (``H`` or ``(H, W)``) by :func:`fit_image`.

    Raises:
        FileNotFoundError: ``root`` or the split folder does not exist.
        ValueError: no class folders and no images, a class missing (by path), an empty class
            folder, an undecodable image (by path), or images of different sizes without ``size``.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no image folder or zip at {root}")
    tree = _Tree(root)
    base = ""
    # One top-level folder that holds folders, not images (e.g. ``cifar10-jpeg/`` in a zip): enter it.
    top = tree.subdirs("")
    if (
        len(top) == 1
        and not tree.image_files("")
        and split not in top
        and tree.subdirs(top[0])
        and not tree.image_files(top[0])
    ):
        base = top[0]
    folder = base
    if split is not None:
        folder = _join(base, split)
        if not tree.is_dir(folder):
            found = tree.subdirs(base)
            raise FileNotFoundError(
                f"split folder {tree.label(folder)} does not exist (found: {', '.join(found) or 'nothing'})"
            )
        if classes is None:
            # The union of the class folders of every split, so that labels agree across splits.
            splits = [d for d in tree.subdirs(base) if tree.subdirs(_join(base, d))]
            classes = sorted({c for d in splits for c in tree.subdirs(_join(base, d))})
            absent = [c for c in classes if c not in tree.subdirs(folder)]
            if absent:
                raise ValueError(
                    f"class folder {tree.label(_join(folder, absent[0]))} is missing "
                    f"({len(absent)} of {len(classes)} classes missing: {', '.join(absent)}); other splits "
                    f"({', '.join(d for d in splits if d != split)}) have it, so labels would not agree"
                )
    found = tree.subdirs(folder)
    flat = not found and classes is None and bool(tree.image_files(folder))
    if classes is None:
        classes = found
    classes = list(classes)
    if not classes and not flat:
        raise ValueError(
            f"no class sub-folders and no images in {tree.label(folder)} (expected <class>/<image> files, or images)"
        )
    for c in classes:
        if c not in found:
            raise ValueError(
                f"class folder {tree.label(_join(folder, c))} is missing (expected classes: {', '.join(classes)})"
            )
    items: list[tuple[str, int]] = [(_join(folder, f), -1) for f in tree.image_files(folder)] if flat else []
    for k, c in enumerate(classes):
        files = tree.image_files(_join(folder, c))
        if not files and split is None and tree.subdirs(_join(folder, c)):
            raise ValueError(
                f"{tree.label(_join(folder, c))} holds folders, not images: is {tree.label(folder)} a set of "
                f"splits ({', '.join(found)})? Pass split= (e.g. split={found[0]!r})"
            )
        if not files:
            raise ValueError(
                f"class folder {tree.label(_join(folder, c))} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            )
        items += [(_join(folder, c, f), k) for f in files]
    if limit is not None:
        items = items[:limit]
    read = tree.reader()

    def load(rel: str) -> np.ndarray:
        return _decode(read(rel), tree.label(rel))

    if tree.zip is not None or threads <= 1:
        # ZipFile reads are not thread-safe on one handle: read serially, decode in threads
        blobs = [(read(rel), rel) for rel, _ in items]
        work: Callable = lambda b: _decode(b[0], tree.label(b[1]))  # noqa: E731
        source = blobs
    else:
        work, source = load, [rel for rel, _ in items]
    budget = MemoryBudget(str(root), len(items))  # a folder too large is refused while it is read

    def bounded(item) -> np.ndarray:
        a = work(item)
        return budget.hold(a if size is None else fit_image(a, size))  # per image: only fitted ones are held

    if threads > 1 and len(items) > 256:
        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(bounded, source, chunksize=256))
    else:
        arrays = [bounded(s) for s in source]
    shape = arrays[0].shape
    for a, (rel, _) in zip(arrays, items):
        if a.shape != shape:
            raise ValueError(
                f"image {tree.label(rel)} is {a.shape[1]}×{a.shape[0]} but {tree.label(items[0][0])} is "
                f"{shape[1]}×{shape[0]}; all images of a dataset must have one size, or give size= (e.g. the "
                "model's input size) to resize and centre-crop every image to it"
            )
    images = from_hwc(np.stack(arrays), str(root))
    labels = torch.tensor([k for _, k in items], dtype=torch.int64)
    meta: dict = {"files": [rel for rel, _ in items]}
    if flat:
        meta["unlabelled"] = True
    if size is not None:
        meta["fitted_to"] = list(shape[:2])
    return LabeledImages(
        images,
        labels,
        classes or None,
        name=name or (f"folder:{split}" if split else "folder"),
        source=str(root),
        meta=meta,
    )
