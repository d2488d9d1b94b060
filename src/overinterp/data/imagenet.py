"""ImageNet validation images from the standard local layouts, and photo resizing.

Layouts (``root`` may also hold them under ``val/``):

* **class folders by synset**: ``<root>/n01440764/*.JPEG`` … (what
  torchvision's ``ImageFolder`` and most preparation scripts make);
* **flat files** ``<root>/ILSVRC2012_val_00000001.JPEG`` … with the ground truth
  from either the devkit (``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt``,
  one ILSVRC2012_ID per image in file-name order, mapped to synsets by the
  devkit's ``meta.mat`` — read with SciPy — or by a text file of the 1,000
  synsets in ILSVRC2012_ID order) or Kaggle's ``LOC_val_solution.csv``.

Labels are positions in the sorted list of the 1,000 synsets, the order of
torchvision's and timm's classifiers. That list comes from a synset file
(``LOC_synset_mapping.txt`` or ``synset_words.txt``: ``n01440764 tench, Tinca
tinca`` per line), found in ``root`` or beside it, or from the class folders
when all 1,000 are present. Human-readable names come from the synset file,
else torchvision's ImageNet category names (1,000 classes in that order).

Images are decoded only when asked for (:meth:`ImageNetVal.load`), resized so
the shorter side is ``resize`` and centre-cropped to ``crop`` (Inception-v3:
342 → 299; most others 256 → 224), bilinear.
"""

from __future__ import annotations

import csv
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from overinterp.data.base import LabeledImages

__all__ = [
    "ImageNetVal",
    "open_imagenet_val",
    "load_imagenet_val",
    "resize_center_crop",
    "resize_images",
    "load_photo",
    "imagenet_class_names",
]

_SYNSET = re.compile(r"^n\d{8}$")
_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
_SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")
_GT_FILE = "ILSVRC2012_validation_ground_truth.txt"


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in the standard (sorted-synset) order, from torchvision."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def resize_center_crop(image: "PIL.Image.Image", resize: int | None, crop: int | tuple[int, int]) -> np.ndarray:  # noqa: F821
    """PIL image → ``(H, W, 3)`` uint8: shorter side to ``resize`` (``None``: resize straight
    to ``crop``), then a centre crop of ``crop`` (int or ``(H, W)``)."""
    from PIL import Image

    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    im = image.convert("RGB")
    if resize is None:
        im = im.resize((cw, ch), Image.BILINEAR)
    else:
        w, h = im.size
        s = resize / min(w, h)
        nw, nh = max(cw, round(w * s)), max(ch, round(h * s))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - cw) // 2, (nh - ch) // 2
        im = im.crop((left, top, left + cw, top + ch))
    return np.asarray(im, dtype=np.uint8)


def load_photo(path: str | Path, size: int | tuple[int, int], resize: int | None = None) -> Tensor:
    """One image file → ``(3, H, W)`` float32 pixels in [0, 1] at ``size`` (plain resize
    unless ``resize`` asks for shorter-side resize + centre crop)."""
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as im:
            arr = resize_center_crop(im, resize, size)
    except FileNotFoundError:
        raise FileNotFoundError(f"no image at {p}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise ValueError(f"cannot decode image {p}: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_images(images: Tensor | Sequence[Tensor], size: int | tuple[int, int]) -> Tensor:
    """Images of any (mixed) sizes → one ``(N, C, H, W)`` batch at ``size`` (bilinear, antialiased)."""
    h, w = (size, size) if isinstance(size, int) else size
    items = (
        [images[i] for i in range(images.shape[0])]
        if isinstance(images, Tensor) and images.dim() == 4
        else list(images)
    )
    out = []
    for x in items:
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError("each image must be a (C, H, W) tensor")
        xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        out.append(
            torch.nn.functional.interpolate(
                xf[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False
            )[0].clamp(0, 1)
        )
    return torch.stack(out)


def _read_synset_file(path: Path) -> tuple[list[str], list[str]]:
    synsets, names = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not _SYNSET.match(wnid):
            raise ValueError(f"{path}, line {line_no}: expected 'nXXXXXXXX name', got {line[:60]!r}")
        synsets.append(wnid)
        names.append(name.strip() or wnid)
    return synsets, names


def _find(root: Path, names: Sequence[str]) -> Path | None:
    for base in (root, root.parent, root.parent.parent):
        for n in names:
            if (base / n).is_file():
                return base / n
    return None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")
    )


@dataclass
class ImageNetVal:
    """An ImageNet validation set on disk, not yet decoded.

    Attributes:
        root: the folder.
        files: image paths, in label-folder then file-name order (flat: file-name order).
        labels: ``(N,)`` int64 positions in ``synsets``.
        synsets: the class synsets in label order.
        classes: human-readable names in label order.
        layout: ``"folders"`` or ``"flat"``.
    """

    root: Path
    files: list[Path]
    labels: Tensor
    synsets: list[str]
    classes: list[str]
    layout: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def load(
        self,
        indices: Sequence[int] | Tensor | None = None,
        *,
        crop: int = 299,
        resize: int | None = 342,
        threads: int = 2,
    ) -> LabeledImages:
        """Decode ``indices`` (default all) → :class:`LabeledImages` uint8 ``(n, 3, crop, crop)``."""
        from PIL import Image

        idx = list(range(len(self))) if indices is None else [int(i) for i in torch.as_tensor(indices).flatten()]
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(f"image index {i} out of range for {len(self)} images")

        def decode(i: int) -> np.ndarray:
            p = self.files[i]
            try:
                with Image.open(p) as im:
                    return resize_center_crop(im, resize, crop)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"cannot decode image {p}: {type(exc).__name__}: {exc}") from exc

        with ThreadPoolExecutor(max(1, threads)) as pool:
            arrays = list(pool.map(decode, idx))
        if arrays:
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        else:
            images = torch.zeros((0, 3, crop, crop), dtype=torch.uint8)
        meta = {"key": "imagenet:val", "indices": idx, "files": [str(self.files[i]) for i in idx]}
        return LabeledImages(images, self.labels[idx], list(self.classes), "imagenet:val", str(self.root), meta)


def open_imagenet_val(
    root: str | Path,
    *,
    synset_file: str | Path | None = None,
    ground_truth: str | Path | None = None,
    meta_mat: str | Path | None = None,
    synsets_by_id: str | Path | None = None,
) -> ImageNetVal:
    """Index an ImageNet validation folder (see the module doc for the layouts).

    Args:
        root: the folder (or its parent, when it holds ``val/``).
        synset_file: ``LOC_synset_mapping.txt`` / ``synset_words.txt``; default: searched beside ``root``.
        ground_truth: the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (flat layout);
            default: searched under ``root`` and its parent, also inside ``ILSVRC2012_devkit_t12/data``.
        meta_mat: the devkit's ``meta.mat`` (ILSVRC2012_ID → synset; needs SciPy).
        synsets_by_id: instead of ``meta.mat``: a text file, line ``i`` = synset of ILSVRC2012_ID ``i``.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: no recognised layout, missing or inconsistent ground truth; the message says which file is wanted.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no ImageNet validation folder at {root}")
    if (root / "val").is_dir() and not _images_in(root):
        root = root / "val"
    sfile = Path(synset_file) if synset_file is not None else _find(root, _SYNSET_FILES)
    synsets: list[str] | None = None
    names: list[str] | None = None
    if sfile is not None:
        synsets, names = _read_synset_file(sfile)
        if synsets != sorted(synsets):
            order = sorted(range(len(synsets)), key=lambda i: synsets[i])
            synsets, names = [synsets[i] for i in order], [names[i] for i in order]

    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and _SYNSET.match(p.name))
    if folders:
        if synsets is None:
            if len(folders) != 1000:
                raise ValueError(
                    f"{root} has {len(folders)} synset folders, not ImageNet's 1,000, so their sorted positions "
                    "would not be the model's class indices; put LOC_synset_mapping.txt or synset_words.txt "
                    "(all 1,000 synsets) beside it or pass synset_file="
                )
            synsets = folders
        pos = {s: i for i, s in enumerate(synsets)}
        unknown = [f for f in folders if f not in pos]
        if unknown:
            raise ValueError(f"{root}: class folders {unknown[:5]} are not in the synset list {sfile}")
        files, labels = [], []
        for f in folders:
            imgs = _images_in(root / f)
            files += imgs
            labels += [pos[f]] * len(imgs)
        layout = "folders"
    else:
        files = _images_in(root)
        if not files:
            raise ValueError(
                f"{root} holds neither synset class folders (n01440764/…) nor image files "
                "(ILSVRC2012_val_00000001.JPEG …)"
            )
        labels_syn, all_synsets = _flat_ground_truth(root, files, ground_truth, meta_mat, synsets_by_id)
        if synsets is None:
            found = sorted(set(labels_syn) if all_synsets is None else set(all_synsets))
            if len(found) != 1000:
                raise ValueError(
                    f"the ground truth of {root} names {len(found)} synsets, not 1,000, so the class indices "
                    "cannot be inferred; put LOC_synset_mapping.txt or synset_words.txt beside it"
                )
            synsets = found
        pos = {s: i for i, s in enumerate(synsets)}
        missing = sorted({s for s in labels_syn if s not in pos})
        if missing:
            raise ValueError(f"ground-truth synsets {missing[:5]} are not in the synset list {sfile}")
        labels = [pos[s] for s in labels_syn]
        layout = "flat"
    if names is None:
        names = imagenet_class_names() if len(synsets) == 1000 else list(synsets)
    return ImageNetVal(
        root,
        files,
        torch.tensor(labels, dtype=torch.int64),
        list(synsets),
        list(names),
        layout,
        {"synset_file": None if sfile is None else str(sfile)},
    )


def _flat_ground_truth(
    root: Path, files: list[Path], ground_truth, meta_mat, synsets_by_id
) -> tuple[list[str], list[str] | None]:
    """Synset of each flat file, from Kaggle's CSV or the devkit; and all synsets when the devkit gives them."""
    if ground_truth is None:
        csv_path = _find(root, ("LOC_val_solution.csv",))
        if csv_path is not None:
            table = {}
            with csv_path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    table[row["ImageId"]] = row["PredictionString"].split()[0]
            missing = [f.name for f in files if f.stem not in table]
            if missing:
                raise ValueError(f"{csv_path} has no ground truth for {missing[:3]} …")
            return [table[f.stem] for f in files], None
        ground_truth = _find(root, (_GT_FILE, f"ILSVRC2012_devkit_t12/data/{_GT_FILE}", f"data/{_GT_FILE}"))
    if ground_truth is None:
        raise ValueError(
            f"{root} holds flat image files but no ground truth was found: pass the devkit's {_GT_FILE} "
            "(with meta.mat or a synsets-by-ID file) or put LOC_val_solution.csv beside the images"
        )
    gt = Path(ground_truth)
    ids = [int(v) for v in gt.read_text(encoding="utf-8").split()]
    if len(ids) < len(files):
        raise ValueError(f"{gt} has {len(ids)} labels for {len(files)} images")
    nums = []
    for f in files:
        m = re.search(r"(\d+)$", f.stem)
        if m is None:
            raise ValueError(f"cannot read the image number of {f.name} (expected ILSVRC2012_val_NNNNNNNN)")
        nums.append(int(m.group(1)))
    if max(nums) > len(ids):
        raise ValueError(f"{gt} has {len(ids)} labels, but image number {max(nums)} is present")
    by_id = _synsets_by_id(gt, meta_mat, synsets_by_id)
    out = []
    for n in nums:
        k = ids[n - 1]
        if not 1 <= k <= len(by_id):
            raise ValueError(f"{gt}: ILSVRC2012_ID {k} has no synset in the mapping ({len(by_id)} entries)")
        out.append(by_id[k - 1])
    return out, by_id


def _synsets_by_id(gt: Path, meta_mat, synsets_by_id) -> list[str]:
    if synsets_by_id is not None:
        syn = [line.split()[0] for line in Path(synsets_by_id).read_text(encoding="utf-8").splitlines() if line.strip()]
        bad = [s for s in syn if not _SYNSET.match(s)]
        if bad:
            raise ValueError(f"{synsets_by_id}: not synsets: {bad[:3]}")
        return syn
    mat = Path(meta_mat) if meta_mat is not None else gt.parent / "meta.mat"
    if not mat.is_file():
        raise ValueError(
            f"the devkit ground truth {gt} gives ILSVRC2012_IDs; mapping them to synsets needs the devkit's "
            f"meta.mat (not found at {mat}) or synsets_by_id= (a text file of synsets in ILSVRC2012_ID order)"
        )
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ValueError(
            f"reading {mat} needs SciPy (pip install scipy); or pass synsets_by_id= (a text file of the "
            "synsets in ILSVRC2012_ID order) instead"
        ) from None
    rows = loadmat(str(mat), squeeze_me=True)["synsets"]
    table = {int(r["ILSVRC2012_ID"]): str(r["WNID"]) for r in rows if int(r["num_children"]) == 0}
    return [table[i] for i in range(1, len(table) + 1)]


def load_imagenet_val(
    root: str | Path, *, limit: int | None = None, crop: int = 299, resize: int | None = 342, **kwargs
) -> LabeledImages:
    """:func:`open_imagenet_val` then decode the first ``limit`` images (all by default)."""
    val = open_imagenet_val(root, **kwargs)
    n = len(val) if limit is None else min(limit, len(val))
    return val.load(range(n), crop=crop, resize=resize)
