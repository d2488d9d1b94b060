"""ImageFolder datasets (folders and zips), downloads and archive extraction, on files made here."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from overinterp.data import ChecksumError, DatasetNotFoundError, download_file, load_dataset, load_image_folder
from overinterp.data.download import RemoteFile, extract_archive

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
JPEG_ZIP = SHARED / "cifar10-jpeg.zip"


def write_tree(root: Path, splits=("train", "test"), classes=("cat", "dog", "emu"), n=2, size=6, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{k:03d}.png")
                arrays[(split, c, k)] = a
    return arrays


def zip_tree(root: Path, target: Path, top: str = "data") -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, f"{top}/{p.relative_to(root).as_posix()}")
    return target


def test_folder_splits_labels_and_pixels(tmp_path):
    arrays = write_tree(tmp_path / "ds")
    (tmp_path / "ds" / "train" / "cat" / "notes.txt").write_text("not an image")
    train = load_dataset("folder", root=tmp_path / "ds", split="train")
    assert train.name == "folder:train" and train.classes == ["cat", "dog", "emu"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.images.dtype == torch.uint8 and train.images.shape == (6, 3, 6, 6)
    assert torch.equal(train.images[2], torch.from_numpy(arrays[("train", "dog", 0)]).permute(2, 0, 1))
    assert len(load_dataset("folder:test@" + str(tmp_path / "ds"))) == 6
    only = load_image_folder(tmp_path / "ds" / "test")  # class folders directly under root
    assert only.classes == ["cat", "dog", "emu"] and len(only) == 6


def test_zip_reads_the_same_as_the_folder(tmp_path):
    write_tree(tmp_path / "ds", n=3)
    z = zip_tree(tmp_path / "ds", tmp_path / "ds.zip")  # one top-level folder, entered automatically
    for split in ("train", "test"):
        a = load_dataset("folder", root=tmp_path / "ds", split=split)
        b = load_dataset("folder", root=z, split=split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes


def test_missing_class_is_reported_by_path(tmp_path):
    write_tree(tmp_path / "ds")
    for f in (tmp_path / "ds" / "test" / "dog").iterdir():
        f.unlink()
    (tmp_path / "ds" / "test" / "dog").rmdir()
    with pytest.raises(ValueError, match=r"class folder .*test/dog is missing"):
        load_dataset("folder", root=tmp_path / "ds", split="test")
    with pytest.raises(ValueError, match=r"ds/test/dog is missing \(expected classes: cat, dog\)"):
        load_image_folder(tmp_path / "ds", "test", classes=["cat", "dog"])  # classes given explicitly
    empty = tmp_path / "ds" / "train" / "emu"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"train/emu holds no image files"):
        load_dataset("folder", root=tmp_path / "ds", split="train")


def test_corrupt_and_odd_sized_images_are_reported_by_path(tmp_path):
    write_tree(tmp_path / "ds")
    bad = tmp_path / "ds" / "train" / "dog" / "001.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot decode image .*train/dog/001\.png"):
        load_dataset("folder", root=tmp_path / "ds", split="train")
    z = zip_tree(tmp_path / "ds", tmp_path / "ds.zip")
    with pytest.raises(ValueError, match=r"ds\.zip::data/train/dog/001\.png"):
        load_dataset("folder", root=z, split="train")
    Image.fromarray(np.zeros((7, 6, 3), np.uint8)).save(tmp_path / "ds" / "test" / "emu" / "big.png")
    with pytest.raises(ValueError, match=r"test/emu/big\.png is 6×7"):
        load_dataset("folder", root=tmp_path / "ds", split="test")
    with pytest.raises(FileNotFoundError, match="split folder"):
        load_dataset("folder", root=tmp_path / "ds", split="val")


# --------------------------------------------------------------------------- downloads


def test_download_verifies_and_is_atomic(tmp_path):
    payload = b"official bytes" * 100
    src = tmp_path / "remote.bin"
    src.write_bytes(payload)
    good = RemoteFile(
        src.as_uri(),
        "remote.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
        md5=hashlib.md5(payload).hexdigest(),
        size=len(payload),
    )
    dest = tmp_path / "local" / "file.bin"
    assert download_file(good, dest, progress=False).read_bytes() == payload
    bad = RemoteFile(src.as_uri(), "remote.bin", sha256="0" * 64)
    dest2 = tmp_path / "local" / "other.bin"
    with pytest.raises(ChecksumError, match="does not match"):
        download_file(bad, dest2, progress=False)
    assert not dest2.exists()
    assert [p.name for p in dest2.parent.iterdir()] == ["file.bin"]  # no partial files left
    offline = RemoteFile((tmp_path / "nowhere.bin").as_uri(), "nowhere.bin")
    with pytest.raises(DatasetNotFoundError) as info:
        download_file(offline, tmp_path / "local" / "x.bin", progress=False)
    assert offline.url in str(info.value) and str(tmp_path / "local" / "x.bin") in str(info.value)


def test_extract_archive_and_unsafe_members(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("CIFAR-10-C/labels.npy")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "a.tar.gz").write_bytes(buf.getvalue())
    out = extract_archive(tmp_path / "a.tar.gz", tmp_path / "root", "CIFAR-10-C")
    assert (out / "labels.npy").read_bytes() == b"abc"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="cannot extract"):
        extract_archive(tmp_path / "evil.tar", tmp_path / "root2", "CIFAR-10-C")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.data
def test_shared_jpeg_zip_reads_directly():
    if not JPEG_ZIP.exists():
        pytest.skip(f"{JPEG_ZIP} absent (shared CIFAR-10 JPEG copy)")
    test = load_dataset("folder", root=JPEG_ZIP, split="test")
    assert len(test) == 10_000 and test.images.shape[1:] == (3, 32, 32)
    assert test.classes[:3] == ["airplane", "automobile", "bird"] and test.labels.bincount().tolist() == [1000] * 10
