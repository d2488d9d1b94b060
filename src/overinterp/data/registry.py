"""``load_dataset(name, root=…, split=…)``: one entry point for every dataset.

========== =============================================== =====================================
name       splits                                          files under ``root``
========== =============================================== =====================================
cifar10    ``train``, ``test`` (default)                   ``cifar-10-batches-py/`` (torchvision's layout)
cifar10.1  ``v6`` (the only one)                           ``cifar10.1/cifar10.1_v6_{data,labels}.npy``
cifar10c   ``all`` (default), ``sample``, ``<corruption>``, ``CIFAR-10-C/<corruption>.npy``, ``labels.npy``
           ``<corruption>/<severity>``
folder     a sub-folder (``train``…) or none               ``root`` *is* the folder or ``.zip``
========== =============================================== =====================================

``root`` defaults to :func:`~overinterp.data.default_root` (``$OVERINTERP_DATA`` or
``~/.cache/overinterp/data``) for the named datasets; ``folder`` needs one.
A dataset can also be written as one string, ``NAME[:SPLIT][@ROOT]`` — e.g.
``cifar10:test``, ``cifar10c:fog/5``, ``folder:test@../shared/data/cifar10-jpeg.zip``
(see :func:`parse_dataset_spec`), which is what the command line takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from overinterp.data.base import LabeledImages, check_limit
from overinterp.data.cifar10 import load_cifar10
from overinterp.data.cifar10c import load_cifar10c
from overinterp.data.cifar101 import load_cifar101
from overinterp.data.folder import load_image_folder

__all__ = ["load_dataset", "list_datasets", "parse_dataset_spec", "dataset_key", "ALIASES", "expand_alias"]

#: The one alias table: every other name a dataset (or a split of one) goes by → its
#: canonical ``NAME[:SPLIT]``. Dataset names and the short specs every command takes
#: (``cifar10-train``) alike; :func:`expand_alias` applies it, case-insensitively.
ALIASES: dict[str, str] = {
    "cifar-10": "cifar10",
    "cifar10_1": "cifar10.1",
    "cifar101": "cifar10.1",
    "cifar-10.1": "cifar10.1",
    "cifar10-c": "cifar10c",
    "cifar-10-c": "cifar10c",
    "imagefolder": "folder",
    "cifar10.1": "cifar10.1:v6",
    "cifar10-train": "cifar10:train",
    "cifar10-test": "cifar10:test",
    "cifar10c-sample": "cifar10c:sample",
}
_DEFAULT_SPLIT = {"cifar10": "test", "cifar10.1": "v6", "cifar10c": "all", "folder": None}


def list_datasets() -> list[str]:
    """The dataset names :func:`load_dataset` takes."""
    return sorted(_DEFAULT_SPLIT)


def expand_alias(spec: str) -> str:
    """``spec`` (``NAME[:SPLIT][@ROOT]``) with an alias in front of its ``@ROOT`` replaced by
    the canonical ``NAME[:SPLIT]`` (:data:`ALIASES`); anything else is returned as it is."""
    head, at, root = spec.partition("@")
    whole = ALIASES.get(head.strip().lower())
    if whole is not None:
        return whole + at + root
    name, colon, split = head.partition(":")
    short = ALIASES.get(name.strip().lower())
    if short is not None and ":" not in short:
        return short + colon + split + at + root
    return spec


def _canonical(name: str) -> str:
    key = expand_alias(name.strip()).partition(":")[0].lower()
    if key not in _DEFAULT_SPLIT:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return key


def dataset_key(name: str, split: str | None = None) -> str:
    """The canonical ``name:split`` recorded in results (e.g. ``cifar10:test``, ``cifar10.1:v6``)."""
    key = _canonical(name)
    split = _DEFAULT_SPLIT[key] if split is None else split
    if key == "cifar10.1" and split == "test":
        split = "v6"
    return key if split is None else f"{key}:{split}"


def parse_dataset_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``"NAME[:SPLIT][@ROOT]"`` (or an alias, :data:`ALIASES`) → ``(name, split, root)``
    (split and root may be ``None``)."""
    text, _, root = expand_alias(spec).partition("@")
    name, _, split = text.partition(":")
    if not name:
        raise ValueError(f"dataset spec {spec!r}: expected NAME[:SPLIT][@ROOT], e.g. cifar10:test")
    return _canonical(name), (split or None), (root or None)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str | None = None,
    *,
    download: bool = False,
    verify: bool = False,
    limit: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> LabeledImages:
    """Load a dataset as :class:`LabeledImages`: uint8 ``(N, 3, H, W)`` images
    (``.pixels()`` → float in ``[0, 1]``), int64 labels and class names.

    Args:
        name: ``cifar10``, ``cifar10.1``, ``cifar10c`` or ``folder`` (see the module doc);
            ``NAME:SPLIT@ROOT`` in one string also works.
        root: where the files are (a folder or zip for ``folder``).
        split: see the table in the module doc; ``None`` takes the default.
        download: fetch missing official files (checksum-verified).
        verify: check present files' checksums too (where official checksums exist).
        limit: keep only the first ``limit`` images.
        **kwargs: passed to the loader (``classes=`` for folders, ``sample_size=``
            for the CIFAR-10-C sample, …).

    Raises:
        DatasetNotFoundError: (a ``FileNotFoundError``) files absent; names the
            official URL and the expected local path.
        ValueError: unknown name or split, malformed or corrupt files (by path).
    """
    check_limit(limit)
    if ":" in name or "@" in name or name.strip().lower() in ALIASES:
        name, spec_split, spec_root = parse_dataset_spec(name)
        split = split if split is not None else spec_split
        root = root if root is not None else spec_root
    key = _canonical(name)
    if split is None:
        split = _DEFAULT_SPLIT[key]
    if key == "cifar10":
        data = load_cifar10(root, split, download=download, verify=verify, progress=progress, **kwargs)
    elif key == "cifar10.1":
        data = load_cifar101(root, split, download=download, verify=verify, progress=progress, **kwargs)
    elif key == "cifar10c":
        data = load_cifar10c(root, split, download=download, progress=progress, **kwargs)
    else:
        if root is None:
            raise ValueError("dataset 'folder' needs root=: a folder or .zip in the ImageFolder layout")
        if download:
            raise ValueError("dataset 'folder' is local: there is nothing to download")
        data = load_image_folder(root, split, limit=limit, name=dataset_key(key, split), **kwargs)
    if limit is not None and len(data) > limit:
        data = data.subset(slice(0, limit))
    data.meta.setdefault("key", dataset_key(key, split))
    return data
