"""CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, 32×32, 10 classes.

The files are the official "python version" archive, laid out as torchvision
lays it out: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}`` — so a folder torchvision already downloaded serves as
``root`` too. ``download=True`` fetches the archive from the official URL,
checks its md5 and extracts it.

The batches are Python pickles. They are read with a restricted unpickler that
only reconstructs plain containers and numpy arrays: a tampered file cannot run
code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from overinterp.data.base import CIFAR10_CLASSES, LabeledImages, default_root
from overinterp.data.download import DatasetNotFoundError, RemoteFile, download_file, extract_archive, verify_file

__all__ = ["CIFAR10_ARCHIVE", "CIFAR10_FILES", "load_cifar10", "cifar10_dir", "download_cifar10"]

CIFAR10_ARCHIVE = RemoteFile(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
FOLDER = "cifar-10-batches-py"

#: md5 of each extracted file (the official values, also listed by torchvision).
CIFAR10_FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class _SafeUnpickler(pickle.Unpickler):
    """Only what a CIFAR batch needs: numpy arrays, dtypes and ``bytes`` re-encoding."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        make = self._allowed.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return make()


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot read CIFAR-10 batch {path}: {exc} (corrupt or not a CIFAR-10 python batch)") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR-10 batch {path} holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar10_dir(root: str | Path | None = None) -> Path:
    """The folder holding the batches: ``root`` itself if it has them, else ``root/cifar-10-batches-py``."""
    base = Path(root).expanduser() if root is not None else default_root()
    if (base / "batches.meta").is_file() or (base / "test_batch").is_file():
        return base
    return base / FOLDER


def download_cifar10(root: str | Path | None = None, progress: bool = True) -> Path:
    """Download and extract the official archive into ``root``; return the batches folder."""
    base = Path(root).expanduser() if root is not None else default_root()
    archive = download_file(CIFAR10_ARCHIVE, base / CIFAR10_ARCHIVE.filename, progress=progress)
    folder = extract_archive(archive, base, FOLDER)
    archive.unlink()
    return folder


def load_cifar10(
    root: str | Path | None = None,
    split: str = "test",
    *,
    download: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> LabeledImages:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) images in the official order.

    Args:
        root: folder with ``cifar-10-batches-py/`` (or the batch files themselves);
            default :func:`~overinterp.data.default_root`.
        split: ``"train"`` or ``"test"``.
        download: fetch the official archive (md5-checked) when the files are absent.
        verify: also check each batch file's md5 against the official one.

    Raises:
        DatasetNotFoundError: files absent (and ``download`` false or failed);
            names the URL and the expected folder.
        ValueError: unknown split, corrupt or malformed batch (named by path).
    """
    if split not in SPLITS:
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    folder = cifar10_dir(root)
    missing = [name for name in SPLITS[split] if not (folder / name).is_file()]
    if missing and download:
        folder = download_cifar10(root, progress=progress)
        missing = [name for name in SPLITS[split] if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 {split} files {', '.join(missing)} not found in {folder}. Fetch them with "
            f"download=True from {CIFAR10_ARCHIVE.url} ({CIFAR10_ARCHIVE.describe()}), or extract that "
            f"archive yourself so that {folder}/ holds the batch files"
        )
    images, labels = [], []
    for name in SPLITS[split]:
        path = folder / name
        if verify:
            verify_file(path, md5=CIFAR10_FILES[name])
        batch = _read_batch(path)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"CIFAR-10 batch {path} lacks 'data' or 'labels' (keys: {sorted(batch)})")
        data = np.asarray(batch["data"])
        lab = np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != lab.shape[0]:
            raise ValueError(
                f"CIFAR-10 batch {path}: expected uint8 data (N, 3072) and N labels, got data "
                f"{data.dtype} {data.shape} and {lab.shape[0]} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R, G, B planes of 32×32
        labels.append(lab)
    classes = list(CIFAR10_CLASSES)
    meta_path = folder / "batches.meta"
    if meta_path.is_file():
        names = _read_batch(meta_path).get("label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return LabeledImages(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
        torch.from_numpy(np.concatenate(labels)),
        classes,
        name=f"cifar10:{split}",
        source=str(folder),
    )
