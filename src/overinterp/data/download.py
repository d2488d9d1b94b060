"""Downloads with checksums, atomically, and archive extraction that cannot escape its folder.

* :func:`download_file` streams a URL to ``<dest>.part-…`` in the destination
  folder, checks its size and checksum (sha256 and/or md5), and only then renames
  it to ``dest``: an interrupted or corrupted download never leaves a file under
  the final name.
* Errors name the URL and the local path where the file is expected, so that a
  user without internet can fetch it elsewhere and put it there
  (:class:`DatasetNotFoundError`, a ``FileNotFoundError``).
* :func:`extract_archive` unpacks ``.tar``/``.tar.gz``/``.tgz`` with the
  ``"data"`` filter (no absolute paths, no ``..``, no links out, no devices) into
  a temporary folder next to the target, then renames it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "RemoteFile",
    "DatasetNotFoundError",
    "ChecksumError",
    "file_digest",
    "verify_file",
    "download_file",
    "extract_archive",
]

_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing locally and could not (or was not asked to) be downloaded."""


class ChecksumError(ValueError):
    """A file's size or checksum differs from the official one."""


@dataclass(frozen=True)
class RemoteFile:
    """An official file: where it comes from and what it must hash to."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def describe(self) -> str:
        sums = [f"{k} {v}" for k, v in (("sha256", self.sha256), ("md5", self.md5)) if v]
        size = f"{self.size:,} bytes" if self.size else ""
        return ", ".join([s for s in [size, *sums] if s])


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(
    path: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given size and checksums."""
    p = Path(path)
    if size is not None and p.stat().st_size != size:
        raise ChecksumError(f"{p} has {p.stat().st_size:,} bytes, expected {size:,} (truncated or another file)")
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(p, algorithm)
            if got.lower() != expected.lower():
                raise ChecksumError(f"{p}: {algorithm} {got} does not match the official {expected}")


def download_file(
    remote: RemoteFile,
    dest: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``remote`` to ``dest`` (atomically), verified; return ``dest``.

    An existing ``dest`` that verifies is kept as is; one that does not is
    replaced.

    Raises:
        DatasetNotFoundError: the download failed (offline, HTTP error); the
            message names the URL and ``dest``.
        ChecksumError: the downloaded bytes do not match; nothing is left at ``dest``.
    """
    target = Path(dest)
    if target.is_file():
        try:
            verify_file(target, sha256=remote.sha256, md5=remote.md5, size=remote.size)
            return target
        except ChecksumError:
            pass  # re-download below
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.part-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(remote.url, headers={"User-Agent": "overinterp"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    total = response.headers.get("Content-Length")
                    total = int(total) if total and total.isdigit() else remote.size
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=f"downloading {remote.filename}",
                        disable=not progress,
                        leave=False,
                    ) as bar:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DatasetNotFoundError(
                    f"could not download {remote.url} to {target}: {exc}. Without internet, fetch that "
                    f"URL on another machine ({remote.describe()}) and put the file at {target}"
                ) from exc
            out.flush()
            os.fsync(out.fileno())
        try:
            verify_file(tmp, sha256=remote.sha256, md5=remote.md5, size=remote.size)
        except ChecksumError as exc:
            raise ChecksumError(f"download of {remote.url} is corrupt: {exc}") from exc
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def extract_archive(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], member: str) -> Path:
    """Extract ``archive`` so that ``dest_dir/member`` appears complete or not at all.

    ``member`` is the top-level folder the archive holds (e.g. ``"CIFAR-10-C"``).
    Returns ``dest_dir / member``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    final = dest_dir / member
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{member}.extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except tarfile.TarError as exc:  # includes the "data" filter's refusals
            raise ValueError(f"cannot extract {archive}: {type(exc).__name__}: {exc}") from exc
        extracted = staging / member
        if not extracted.is_dir():
            found = sorted(p.name for p in staging.iterdir())
            raise ValueError(f"archive {archive} does not hold the folder {member!r} (it holds {found})")
        if final.exists():
            shutil.rmtree(final)
        os.replace(extracted, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
