"""CIFAR-10.1 v6 (Recht et al. 2018): 2,000 new test images for CIFAR-10 classifiers.

Official files, from the datasets/ folder of the CIFAR-10.1 GitHub repository
(modestyachts/CIFAR-10.1):

* ``cifar10.1_v6_data.npy``: ``(2000, 32, 32, 3)`` uint8, 6,144,128 bytes;
* ``cifar10.1_v6_labels.npy``: ``(2000,)`` int64 labels in CIFAR-10's class order, 8,128 bytes.

They are expected in ``<root>/cifar10.1/`` (or directly in ``root``).
Downloads are checked against the official sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from overinterp.data.base import CIFAR10_CLASSES, LabeledImages, default_root, from_hwc
from overinterp.data.download import DatasetNotFoundError, RemoteFile, download_file, verify_file

__all__ = ["CIFAR101_FILES", "load_cifar101", "cifar101_dir"]

_BASE_URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
CIFAR101_FILES = {
    "data": RemoteFile(
        url=_BASE_URL + "cifar10.1_v6_data.npy",
        filename="cifar10.1_v6_data.npy",
        sha256="2997188e5816f5bd545dc77771b6227828c28146049fcecf3fa10775474cacc6",
        size=6_144_128,
    ),
    "labels": RemoteFile(
        url=_BASE_URL + "cifar10.1_v6_labels.npy",
        filename="cifar10.1_v6_labels.npy",
        sha256="ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448",
        size=8_128,
    ),
}
FOLDER = "cifar10.1"


def cifar101_dir(root: str | Path | None = None) -> Path:
    """``root`` if it holds the files, else ``root/cifar10.1``."""
    base = Path(root).expanduser() if root is not None else default_root()
    if (base / CIFAR101_FILES["data"].filename).is_file():
        return base
    return base / FOLDER


def load_cifar101(
    root: str | Path | None = None,
    split: str | None = None,
    *,
    download: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> LabeledImages:
    """The 2,000 CIFAR-10.1 v6 images and labels.

    Args:
        root: folder with ``cifar10.1/`` (or the two files); default
            :func:`~overinterp.data.default_root`.
        split: ``None``, ``"v6"`` or ``"test"`` (there is one split).
        download: fetch missing files from GitHub (sha256-checked).
        verify: check present files against the official sha256 too.
    """
    if split not in (None, "v6", "test"):
        raise ValueError(f"CIFAR-10.1 has one split, 'v6'; got {split!r}")
    folder = cifar101_dir(root)
    paths = {key: folder / remote.filename for key, remote in CIFAR101_FILES.items()}
    for key, path in paths.items():
        remote = CIFAR101_FILES[key]
        if not path.is_file():
            if not download:
                raise DatasetNotFoundError(
                    f"CIFAR-10.1 file {path} not found. Fetch it with download=True from "
                    f"{remote.url} ({remote.describe()}), or put that file at {path}"
                )
            download_file(remote, path, progress=progress)
        elif verify:
            verify_file(path, sha256=remote.sha256, size=remote.size)
    try:
        data = np.load(paths["data"], allow_pickle=False)
        labels = np.load(paths["labels"], allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"cannot read CIFAR-10.1 files in {folder}: {exc}") from exc
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"CIFAR-10.1: {paths['labels']} must hold one integer label per image of "
            f"{paths['data']} ({data.shape[0]}), got {labels.dtype} {labels.shape}"
        )
    return LabeledImages(
        from_hwc(data, str(paths["data"])),
        torch.from_numpy(labels.astype(np.int64)),
        list(CIFAR10_CLASSES),
        name="cifar10.1:v6",
        source=str(folder),
    )
