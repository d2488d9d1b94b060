"""One string names any labelled image set: the one dataset-spec parser of every command.

The forms (documented once, in docs/how-to/datasets.md):

* ``NAME[:SPLIT][@ROOT]`` — a registered dataset (:func:`~overinterp.data.load_dataset`),
  e.g. ``cifar10:test``, ``cifar10c:fog/5@/data``, ``folder:test@data/cifar10-jpeg.zip``;
  ``ROOT`` is everything after the first ``@`` (so it may itself contain ``@``);
* aliases ``cifar10-train``, ``cifar10-test``, ``cifar10.1``, ``cifar10c-sample``;
* ``folder:PATH`` or ``folder:SPLIT@PATH`` — an ImageFolder directory or zip (an
  existing ``PATH`` is taken whole, ``@`` and all);
* ``PATH.npz[:PREFIX]`` — arrays ``PREFIX_images`` (N, H, W, 3) or (N, 3, H, W) uint8
  and ``PREFIX_labels`` (e.g. ``cifar10-lossless.npz:test``); without ``PREFIX``,
  ``images``/``labels``; optional ``classes``; ``PREFIX_indices`` kept in ``meta``;
* ``PATH.npy`` / ``PATH.pt`` — arrays as :func:`~overinterp.data.load_images` reads them (with labels);
* an existing folder or ``.zip`` — an ImageFolder tree (class sub-folders).

:func:`parse_dataset` turns a string into a :class:`DatasetSpec`; :func:`open_dataset`
opens it; :func:`portable_spec` writes it with absolute paths (for workers elsewhere).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from overinterp.data.base import LabeledImages, check_limit
from overinterp.data.decode import check_array_file
from overinterp.data.registry import ALIASES, dataset_key, expand_alias, load_dataset, parse_dataset_spec

__all__ = [
    "DatasetSpec",
    "parse_dataset",
    "open_dataset",
    "open_images",
    "portable_spec",
    "canonical_spec",
    "ALIASES",
    "FORMS",
]

#: One line for error messages and help texts.
FORMS = (
    "NAME[:SPLIT][@ROOT] (cifar10:test, cifar10.1, cifar10c:sample, folder:test@x.zip), an alias "
    "(cifar10-train, cifar10-test, cifar10c-sample), folder:PATH, PATH.npz[:PREFIX], PATH.npy/.pt, "
    "or an image folder"
)

_ARRAYS = (".npy", ".pt", ".pth")

Kind = Literal["registry", "npz", "array"]


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    ``kind``: ``registry`` (``name``, ``split``, ``root``; image folders are the
    registry's ``folder`` with ``root`` the path), ``npz`` (``path``, ``prefix``)
    or ``array`` (``path``).
    """

    kind: Kind
    name: str | None = None
    split: str | None = None
    root: str | None = None
    path: str | None = None
    prefix: str | None = None

    def __str__(self) -> str:
        """The canonical string, which :func:`parse_dataset` reads back to this spec."""
        if self.kind == "npz":
            return f"{self.path}:{self.prefix}" if self.prefix else str(self.path)
        if self.kind == "array":
            return str(self.path)
        text = str(self.name) + (f":{self.split}" if self.split else "")
        return text + (f"@{self.root}" if self.root else "")

    @property
    def key(self) -> str:
        """The dataset name recorded in results: ``cifar10:test``, ``folder:train``; files by
        their name only, ``file:x.npz[:PREFIX]`` (so results do not depend on where the file is)."""
        if self.kind == "registry":
            return dataset_key(str(self.name), self.split)
        return f"file:{Path(str(self.path)).name}" + (f":{self.prefix}" if self.prefix else "")

    def with_root(self, root: str | os.PathLike[str] | None) -> "DatasetSpec":
        """A registry spec without ``@ROOT`` gets ``root`` (``folder:SPLIT`` naming no existing
        path becomes ``folder:SPLIT@root``); other specs are returned as they are."""
        if root is None or self.kind != "registry":
            return self
        if (
            self.name == "folder"
            and self.split is None
            and self.root
            and not Path(self.root).exists()
            and "/" not in self.root
            and os.sep not in self.root
        ):
            return DatasetSpec("registry", "folder", self.root, os.fspath(root))  # folder:SPLIT under root
        if self.root is not None:
            return self
        return DatasetSpec("registry", self.name, self.split, os.fspath(root))

    def portable(self) -> "DatasetSpec":
        """The same spec with absolute paths (workers started in other folders open the same files)."""
        if self.kind == "registry":
            root = None if self.root is None else str(Path(self.root).expanduser().resolve())
            return DatasetSpec("registry", self.name, self.split, root)
        return DatasetSpec(self.kind, path=str(Path(str(self.path)).expanduser().resolve()), prefix=self.prefix)

    def open(self, *, download: bool = False, progress: bool = False, limit: int | None = None) -> LabeledImages:
        """The labelled images (the first ``limit`` only, when given)."""
        check_limit(limit)
        if self.kind == "registry":
            data = load_dataset(
                str(self.name), self.root, self.split, download=download, progress=progress, limit=limit
            )
        elif self.kind == "npz":
            data = _npz(Path(str(self.path)), self.prefix, str(self))
        else:
            data = _array(Path(str(self.path)), str(self))
        if limit is not None and len(data) > limit:
            data = data.subset(slice(0, limit))
        data.meta.setdefault("key", self.key)
        return data


def _split_folder(rest: str) -> tuple[str | None, str]:
    """``folder:REST`` → ``(split, path)``: an existing ``REST`` is a path (``@`` and all),
    else ``SPLIT@PATH`` when the part before the first ``@`` is a plain sub-folder name."""
    if Path(rest).expanduser().exists() or "@" not in rest:
        return None, rest
    split, _, path = rest.partition("@")
    if split and "/" not in split and os.sep not in split and path:
        return split, path
    return None, rest


def parse_dataset(spec: str | os.PathLike[str] | DatasetSpec) -> DatasetSpec:
    """Parse any dataset spec (see the module doc); ``ValueError`` names the forms for one it cannot read."""
    if isinstance(spec, DatasetSpec):
        return spec
    text = os.fspath(spec).strip()
    if not Path(text).expanduser().exists():
        text = expand_alias(text)  # the one alias table (data/registry.py)
    if not text:
        raise ValueError(f"empty dataset spec; expected {FORMS}")
    if text.lower().startswith(("folder:", "imagefolder:")):
        split, path = _split_folder(text.partition(":")[2])
        if not path:
            raise ValueError(f"dataset spec {text!r}: folder:PATH needs a path")
        return DatasetSpec("registry", "folder", split, path)
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and "/" not in tail and os.sep not in tail:
        return DatasetSpec("npz", path=head, prefix=tail or None)
    if text.lower().endswith(".npz"):
        return DatasetSpec("npz", path=text)
    if text.lower().endswith(_ARRAYS):
        return DatasetSpec("array", path=text)
    try:
        name, split, root = parse_dataset_spec(text)
    except ValueError:
        if Path(text).expanduser().exists():  # an image folder (or zip) in the ImageFolder layout
            return DatasetSpec("registry", "folder", None, text)
        raise ValueError(f"dataset spec {text!r}: not a known dataset nor an existing path; expected {FORMS}") from None
    return DatasetSpec("registry", name, split, root)


def open_dataset(
    spec: str | os.PathLike[str] | DatasetSpec,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
    limit: int | None = None,
) -> LabeledImages:
    """The labelled images that ``spec`` names; ``root`` fills in a registry spec without ``@ROOT``."""
    return parse_dataset(spec).with_root(root).open(download=download, progress=progress, limit=limit)


def portable_spec(spec: str | os.PathLike[str] | DatasetSpec, root: str | os.PathLike[str] | None = None) -> str:
    """``spec`` as a canonical string with absolute paths, ``root`` filling in a missing ``@ROOT``."""
    return str(parse_dataset(spec).with_root(root).portable())


def canonical_spec(spec: str | os.PathLike[str]) -> str:
    """Aliases expanded and ``folder:PATH`` written ``folder@PATH``: the canonical string of ``spec``."""
    return str(parse_dataset(spec))


def open_images(spec: str | os.PathLike[str], *, limit: int | None = None, root: str | os.PathLike[str] | None = None):
    """Float images for ``backselect --images``: an existing file or folder as
    :func:`~overinterp.data.load_images` reads it (labels optional, one image file
    allowed), or any dataset spec (:func:`open_dataset`)."""
    from overinterp.data.files import ImageSet, load_images

    if Path(os.fspath(spec)).expanduser().exists():
        return load_images(Path(os.fspath(spec)).expanduser(), limit=limit)
    data = open_dataset(spec, root=root, limit=limit)
    names = [f"{data.meta.get('key', data.name)}[{i}]" for i in range(len(data))]
    return ImageSet(data.pixels(), data.labels, names, data.classes)


def _array(path: Path, spec: str) -> LabeledImages:
    from overinterp.data.files import load_images

    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    data = load_images(path)
    if data.labels is None:
        raise ValueError(f"{spec}: {path} holds no labels (a .pt needs a dict with 'images' and 'labels')")
    as_bytes = (data.images * 255).round()
    # uint8 files come back as uint8 (exactly); other float pixels stay float
    images = (
        as_bytes.to(torch.uint8) if torch.equal(as_bytes.to(torch.uint8).float() / 255.0, data.images) else data.images
    )
    return LabeledImages(images, data.labels, data.classes, name=spec, source=str(path))


def _npz(path: Path, prefix: str | None, spec: str) -> LabeledImages:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    check_array_file(path)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        prefixes = sorted(k[: -len("_images")] for k in keys if k.endswith("_images") and f"{k[:-7]}_labels" in keys)
        if prefix is None and "images" not in keys and len(prefixes) == 1:
            prefix = prefixes[0]  # one labelled image array: no PREFIX needed
        ik = f"{prefix}_images" if prefix else "images"
        lk = f"{prefix}_labels" if prefix else "labels"
        if ik not in keys or lk not in keys:
            hint = f"; use {', '.join(f'{path}:{p}' for p in prefixes)}" if prefixes else ""
            raise ValueError(f"{spec}: no arrays {ik!r} and {lk!r} in {path} (keys: {keys}){hint}")
        arr = z[ik]
        labels = torch.as_tensor(z[lk].astype(np.int64))
        classes = [str(c) for c in z["classes"]] if "classes" in keys else None
        idx_key = f"{prefix}_indices" if prefix else "indices"
        positions = z[idx_key].astype(np.int64).tolist() if idx_key in keys else None
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(
            f"{spec}: images must be a uint8 (N, H, W, C) or (N, C, H, W) array, got {arr.dtype} {arr.shape}"
        )
    images = torch.from_numpy(arr)
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    meta: dict = {}
    if positions is not None:
        meta["source_indices"] = positions
    return LabeledImages(images.contiguous(), labels, classes, name=spec, source=str(path), meta=meta)
