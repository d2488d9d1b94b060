"""CIFAR-10-C (Hendrycks & Dietterich 2019): the CIFAR-10 test set under 19
corruptions at 5 severities.

The official ``CIFAR-10-C.tar`` (Zenodo record 2535967; 2,918,471,680 bytes)
extracts to ``CIFAR-10-C/`` with one ``<corruption>.npy`` per corruption —
``(50000, 32, 32, 3)`` uint8: rows ``10000·(s−1) … 10000·s − 1`` are severity
``s`` — and ``labels.npy`` ``(50000,)``, shared by all corruptions. The files
are memory-mapped, so a corruption, a severity or a sample is read without
loading the 2.9 GB.

Splits of :func:`load_cifar10c`:

* ``"all"``: the 950,000 images, corruptions in alphabetical order (2.9 GB in memory);
* ``"<corruption>"`` or ``"<corruption>/<severity>"`` (e.g. ``"fog/5"``);
* ``"sample"``: the uniform random sample of 2,000 images that the paper ran
  SIS on: ``numpy.random.seed(1234)`` then ``numpy.random.choice(950000, 2000,
  replace=False)`` over the ``"all"`` order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from overinterp.data.base import CIFAR10_CLASSES, LabeledImages, default_root, from_hwc
from overinterp.data.download import DatasetNotFoundError, RemoteFile, download_file, extract_archive

__all__ = [
    "CIFAR10C_ARCHIVE",
    "CORRUPTIONS",
    "SEVERITIES",
    "SIS_SAMPLE_SEED",
    "SIS_SAMPLE_SIZE",
    "load_cifar10c",
    "iter_cifar10c",
    "cifar10c_dir",
    "sis_sample_indices",
]

CIFAR10C_ARCHIVE = RemoteFile(
    url="https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
    filename="CIFAR-10-C.tar",
    md5="56bf5dcef84df0e2308c6dcbcbbd8499",
    size=2_918_471_680,
)
FOLDER = "CIFAR-10-C"

#: The 19 corruptions of the archive, alphabetical (the order of split "all").
CORRUPTIONS = (
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "gaussian_blur",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
)
SEVERITIES = (1, 2, 3, 4, 5)
SIS_SAMPLE_SEED = 1234
SIS_SAMPLE_SIZE = 2000


def cifar10c_dir(root: str | Path | None = None) -> Path:
    """``root`` if it holds ``labels.npy``, else ``root/CIFAR-10-C``."""
    base = Path(root).expanduser() if root is not None else default_root()
    if (base / "labels.npy").is_file():
        return base
    return base / FOLDER


class _Files:
    """Memory-mapped corruption arrays and the shared labels of one CIFAR-10-C folder."""

    def __init__(self, folder: Path, corruptions: tuple[str, ...]) -> None:
        self.folder = folder
        labels_path = folder / "labels.npy"
        self.labels = self._open(labels_path)
        if self.labels.ndim != 1 or not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(
                f"CIFAR-10-C: {labels_path} must be a 1-d integer array, got {self.labels.dtype} {self.labels.shape}"
            )
        n = self.labels.shape[0]
        if n % len(SEVERITIES):
            raise ValueError(
                f"CIFAR-10-C: {labels_path} has {n} labels, not a multiple of {len(SEVERITIES)} severities"
            )
        self.per_severity = n // len(SEVERITIES)
        self.arrays = {}
        for c in corruptions:
            path = folder / f"{c}.npy"
            arr = self._open(path)
            if arr.ndim != 4 or arr.shape[0] != n or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise ValueError(
                    f"CIFAR-10-C: {path} must be uint8 (N, H, W, 3) with N = {n} (as labels.npy), "
                    f"got {arr.dtype} {arr.shape}"
                )
            self.arrays[c] = arr

    @staticmethod
    def _open(path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot read CIFAR-10-C file {path}: {exc}") from exc

    def rows(self, severity: int | None) -> slice:
        if severity is None:
            return slice(0, self.labels.shape[0])
        return slice((severity - 1) * self.per_severity, severity * self.per_severity)


def _locate(root, download: bool, progress: bool, corruptions: tuple[str, ...]) -> _Files:
    folder = cifar10c_dir(root)

    def missing() -> list[str]:
        return [f for f in ["labels", *corruptions] if not (folder / f"{f}.npy").is_file()]

    if missing() and download:
        base = Path(root).expanduser() if root is not None else default_root()
        archive = download_file(CIFAR10C_ARCHIVE, base / CIFAR10C_ARCHIVE.filename, progress=progress)
        folder = extract_archive(archive, base, FOLDER)
        archive.unlink()
    gone = missing()
    if gone:
        shown = ", ".join(f"{g}.npy" for g in gone[:4]) + (f" (+{len(gone) - 4} more)" if len(gone) > 4 else "")
        raise DatasetNotFoundError(
            f"CIFAR-10-C files {shown} not found in {folder}. Fetch them with download=True from "
            f"{CIFAR10C_ARCHIVE.url} ({CIFAR10C_ARCHIVE.describe()}), or extract that archive so that "
            f"{folder}/ holds labels.npy and the 19 <corruption>.npy files"
        )
    return _Files(folder, corruptions)


def _parse_split(split: str | None) -> tuple[str, tuple[str, ...], int | None]:
    split = "all" if split in (None, "") else split
    if split in ("all", "sample"):
        return split, CORRUPTIONS, None
    corruption, _, sev = split.partition("/")
    if corruption not in CORRUPTIONS:
        raise ValueError(
            f"unknown CIFAR-10-C split {split!r}: use 'all', 'sample', '<corruption>' or "
            f"'<corruption>/<severity 1-5>' with corruption one of {', '.join(CORRUPTIONS)}"
        )
    severity = None
    if sev:
        if not sev.isdigit() or int(sev) not in SEVERITIES:
            raise ValueError(f"CIFAR-10-C severity must be 1–5, got {sev!r} in {split!r}")
        severity = int(sev)
    return "one", (corruption,), severity


def sis_sample_indices(
    total: int = len(CORRUPTIONS) * 50_000, size: int = SIS_SAMPLE_SIZE, seed: int = SIS_SAMPLE_SEED
) -> np.ndarray:
    """Positions (in split ``"all"``'s order) of the paper's SIS sample: a uniform
    sample without replacement drawn by ``numpy.random.seed(seed)`` +
    ``numpy.random.choice(total, size, replace=False)`` (NumPy's legacy generator,
    which stays reproducible across NumPy versions)."""
    if size > total:
        raise ValueError(f"cannot sample {size} of {total} CIFAR-10-C images")
    return np.random.RandomState(seed).choice(total, size=size, replace=False)


def load_cifar10c(
    root: str | Path | None = None,
    split: str | None = "all",
    *,
    download: bool = False,
    sample_size: int = SIS_SAMPLE_SIZE,
    sample_seed: int = SIS_SAMPLE_SEED,
    progress: bool = True,
) -> LabeledImages:
    """CIFAR-10-C images as one :class:`LabeledImages`; see the module doc for ``split``.

    ``meta`` holds ``corruption`` and ``severity`` per image (``sample``, ``all``) or
    for the whole set; for ``"sample"`` also ``indices`` (positions in ``"all"``).
    """
    kind, corruptions, severity = _parse_split(split)
    files = _locate(root, download, progress, corruptions)
    n = files.labels.shape[0]
    classes = list(CIFAR10_CLASSES)
    if kind == "sample":
        idx = sis_sample_indices(n * len(CORRUPTIONS), sample_size, sample_seed)
        which, row = np.divmod(idx, n)
        h, w = files.arrays[CORRUPTIONS[0]].shape[1:3]
        data = np.empty((idx.size, h, w, 3), dtype=np.uint8)
        for k, c in enumerate(CORRUPTIONS):
            sel = np.nonzero(which == k)[0]
            order = np.argsort(row[sel])
            # sorted fancy indexing reads only those rows of the memory-mapped file
            data[sel[order]] = files.arrays[c][row[sel][order]]
        labels = np.asarray(files.labels[row], dtype=np.int64)
        meta = {
            "indices": idx.tolist(),
            "corruption": [CORRUPTIONS[k] for k in which],
            "severity": (row // files.per_severity + 1).tolist(),
            "seed": sample_seed,
        }
        return LabeledImages(
            from_hwc(data, str(files.folder)),
            torch.from_numpy(labels),
            classes,
            name="cifar10c:sample",
            source=str(files.folder),
            meta=meta,
        )
    rows = files.rows(severity)
    data = np.concatenate([np.asarray(files.arrays[c][rows]) for c in corruptions])
    labels = np.concatenate([np.asarray(files.labels[rows], dtype=np.int64)] * len(corruptions))
    name = "cifar10c:all" if kind == "all" else f"cifar10c:{corruptions[0]}" + (f"/{severity}" if severity else "")
    meta = {"corruptions": list(corruptions), "severity": severity}
    return LabeledImages(
        from_hwc(data, str(files.folder)),
        torch.from_numpy(labels),
        classes,
        name=name,
        source=str(files.folder),
        meta=meta,
    )


def iter_cifar10c(
    root: str | Path | None = None,
    *,
    corruptions: tuple[str, ...] = CORRUPTIONS,
    severities: tuple[int, ...] = SEVERITIES,
    download: bool = False,
    progress: bool = True,
) -> Iterator[tuple[str, int, LabeledImages]]:
    """``(corruption, severity, images)`` for each block of 10,000, one in memory at a time."""
    for c in corruptions:
        _parse_split(c)
    files = _locate(root, download, progress, tuple(corruptions))
    for c in corruptions:
        for s in severities:
            if s not in SEVERITIES:
                raise ValueError(f"CIFAR-10-C severity must be 1–5, got {s}")
            rows = files.rows(s)
            yield (
                c,
                s,
                LabeledImages(
                    from_hwc(np.asarray(files.arrays[c][rows]), str(files.folder / f"{c}.npy")),
                    torch.from_numpy(np.asarray(files.labels[rows], dtype=np.int64)),
                    list(CIFAR10_CLASSES),
                    name=f"cifar10c:{c}/{s}",
                    source=str(files.folder),
                ),
            )
