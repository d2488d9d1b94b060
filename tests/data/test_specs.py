"""The one dataset-spec parser: every form, parsed, opened and written portable."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from overinterp.data.specs import DatasetSpec, canonical_spec, open_dataset, open_images, parse_dataset, portable_spec


def _folder(root, splits=(None,), n=2, size=6):
    rng = np.random.default_rng(0)
    for split in splits:
        base = root if split is None else root / split
        for cls in ("cat", "dog"):
            (base / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(base / cls / f"{k}.png")
    return root


def _npz(path, prefix="test", n=5):
    rng = np.random.default_rng(1)
    np.savez(
        path,
        **{
            f"{prefix}_images": rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8),
            f"{prefix}_labels": np.arange(n) % 3,
            "classes": np.array(["a", "b", "c"]),
        },
    )
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cifar10", DatasetSpec("registry", "cifar10")),
        ("cifar10:train", DatasetSpec("registry", "cifar10", "train")),
        ("CIFAR-10-C:fog/5@/data", DatasetSpec("registry", "cifar10c", "fog/5", "/data")),
        ("cifar10:test@/data/a@b", DatasetSpec("registry", "cifar10", "test", "/data/a@b")),
        ("cifar10-train", DatasetSpec("registry", "cifar10", "train")),
        ("cifar10-test", DatasetSpec("registry", "cifar10", "test")),
        ("cifar10.1", DatasetSpec("registry", "cifar10.1", "v6")),
        ("cifar10c-sample", DatasetSpec("registry", "cifar10c", "sample")),
        ("folder:test@x.zip", DatasetSpec("registry", "folder", "test", "x.zip")),
        ("folder@x.zip", DatasetSpec("registry", "folder", None, "x.zip")),
        ("folder:x.zip", DatasetSpec("registry", "folder", None, "x.zip")),
        ("folder:/no/such/a@b", DatasetSpec("registry", "folder", None, "/no/such/a@b")),
        (
            "../shared/data/cifar10-lossless.npz:test",
            DatasetSpec("npz", path="../shared/data/cifar10-lossless.npz", prefix="test"),
        ),
        ("/d/a@b/x.npz:train", DatasetSpec("npz", path="/d/a@b/x.npz", prefix="train")),
        ("x.npz", DatasetSpec("npz", path="x.npz")),
        ("x.npy", DatasetSpec("array", path="x.npy")),
        ("x.pt", DatasetSpec("array", path="x.pt")),
    ],
)
def test_parse_forms(text, expected):
    spec = parse_dataset(text)
    assert spec == expected
    assert parse_dataset(str(spec)) == spec  # the canonical string reads back


def test_unknown_is_an_error_naming_the_forms():
    with pytest.raises(ValueError, match="NAME\\[:SPLIT\\]\\[@ROOT\\]"):
        parse_dataset("mnist:test")
    with pytest.raises(ValueError):
        parse_dataset("")


def test_canonical_spec():
    assert canonical_spec("cifar10-train") == "cifar10:train"
    assert canonical_spec("folder:test@x.zip") == "folder:test@x.zip"
    assert canonical_spec("folder:x.zip") == "folder@x.zip"


def test_npz_with_and_without_prefix(tmp_path):
    path = _npz(tmp_path / "d.npz")
    data = open_dataset(f"{path}:test")
    assert len(data) == 5 and data.images.dtype == torch.uint8 and data.images.shape == (5, 3, 5, 5)
    assert data.classes == ["a", "b", "c"] and data.meta["key"] == "file:d.npz:test"
    assert torch.equal(open_dataset(str(path)).labels, data.labels)  # one labelled array: no prefix needed
    assert len(open_dataset(f"{path}:test", limit=2)) == 2
    with pytest.raises(ValueError, match="no arrays"):
        open_dataset(f"{path}:train")
    with pytest.raises(FileNotFoundError):
        open_dataset(f"{tmp_path / 'none.npz'}:test")


def test_npz_in_a_folder_with_at(tmp_path):
    (tmp_path / "a@b").mkdir()
    path = _npz(tmp_path / "a@b" / "d.npz")
    assert len(open_dataset(f"{path}:test")) == 5


def test_array_files(tmp_path):
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    torch.save({"images": images.float() / 255, "labels": torch.tensor([0, 1, 0])}, tmp_path / "d.pt")
    data = open_dataset(tmp_path / "d.pt")
    assert torch.equal(data.images, images) and data.labels.tolist() == [0, 1, 0]
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="no labels"):
        open_dataset(tmp_path / "x.npy")


def test_folder_forms(tmp_path):
    root = _folder(tmp_path / "imgs@v2", splits=("train", "test"))
    train = open_dataset(f"folder:train@{root}")
    assert len(train) == 4 and train.classes == ["cat", "dog"] and train.meta["key"] == "folder:train"
    assert torch.equal(open_dataset(f"folder:{root / 'train'}").images, train.images)  # folder:PATH, '@' in it
    assert torch.equal(open_dataset(str(root / "train")).images, train.images)  # a bare folder path
    assert torch.equal(open_dataset(f"folder@{root / 'train'}").images, train.images)
    assert len(open_dataset("folder:test", root=root)) == 4  # --root fills in the folder of folder:SPLIT
    assert len(open_dataset("folder", root=root / "test")) == 4


def test_root_fills_a_missing_root(tmp_path):
    root = _folder(tmp_path / "r", splits=("test",))
    assert parse_dataset("cifar10:test").with_root(root).root == os.fspath(root)
    assert parse_dataset("cifar10:test@/x").with_root(root).root == "/x"
    assert open_dataset("folder:test", root=root).meta["key"] == "folder:test"


def test_portable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_spec("x.npz:test") == f"{tmp_path / 'x.npz'}:test"
    assert portable_spec("cifar10:test", root="d") == f"cifar10:test@{tmp_path / 'd'}"
    assert portable_spec("cifar10-train") == "cifar10:train"
    (tmp_path / "a@b").mkdir()
    text = portable_spec("folder:a@b")
    assert text == f"folder@{tmp_path / 'a@b'}" and parse_dataset(text).root == str(tmp_path / "a@b")
    assert portable_spec("folder:train@a@b") == f"folder:train@{tmp_path / 'a@b'}"


def test_open_images_takes_files_and_specs(tmp_path):
    path = _npz(tmp_path / "d.npz")
    from_spec = open_images(f"{path}:test")
    assert from_spec.images.dtype == torch.float32 and from_spec.labels.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(open_images(path).images, from_spec.images)
    assert len(open_images(f"{path}:test", limit=2).images) == 2


def test_one_alias_table():
    """Issue 22: one dataset alias table. Guards against a second table (specs' spec aliases
    beside the registry's names) that the other entry point does not know: ``load_dataset``
    of ``cifar10-train`` loading the test split, or ``parse_dataset`` refusing ``cifar-10:test``."""
    from overinterp.data import registry, specs
    from overinterp.data.registry import dataset_key, parse_dataset_spec

    assert specs.ALIASES is registry.ALIASES
    for alias, target in registry.ALIASES.items():
        assert canonical_spec(alias) == canonical_spec(target), alias
        assert canonical_spec(alias.upper() + "@r") == canonical_spec(target + "@r"), alias
        assert dataset_key(*parse_dataset_spec(alias)[:2]) == dataset_key(*parse_dataset_spec(target)[:2]), alias
    assert parse_dataset_spec("cifar10-train@/d") == ("cifar10", "train", "/d")
    assert canonical_spec("cifar-10:test") == "cifar10:test"
