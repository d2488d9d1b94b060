"""CIFAR-10, CIFAR-10.1 and CIFAR-10-C loaders on tiny files written in the official formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from overinterp.data import (
    CORRUPTIONS,
    ChecksumError,
    DatasetNotFoundError,
    iter_cifar10c,
    load_cifar10c,
    load_dataset,
    parse_dataset_spec,
    sis_sample_indices,
)
from overinterp.data.cifar10 import CIFAR10_ARCHIVE
from overinterp.data.cifar10c import CIFAR10C_ARCHIVE
from overinterp.data.cifar101 import CIFAR101_FILES

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar10(root, per_batch=3, seed=0):
    """The python version's layout: pickled dicts with bytes keys, data (N, 3072) as R, G, B planes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * per_batch},
                f,
                protocol=2,
            )
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f, protocol=2)
    return batches


def test_cifar10_reads_official_layout(tmp_path):
    batches = write_cifar10(tmp_path)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    test = load_dataset("cifar10", root=tmp_path)  # default split: test
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.name == "cifar10:test" and len(test) == 3 and train.classes == CLASSES
    data, labels = batches["data_batch_2"]
    img = train.images[3]  # first image of the second batch
    assert torch.equal(img[0].flatten(), torch.from_numpy(data[0, :1024]))  # red plane first
    assert torch.equal(img[2].flatten(), torch.from_numpy(data[0, 2048:]))
    assert train.labels[3:6].tolist() == labels
    px = test.pixels()
    assert px.dtype == torch.float32 and torch.allclose(px * 255, test.images.float())
    # the folder itself works as root too (as torchvision's)
    assert len(load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py", split="test")) == 3


def test_cifar10_missing_names_url_and_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path, split="train")
    msg = str(info.value)
    assert CIFAR10_ARCHIVE.url in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert isinstance(info.value, FileNotFoundError)


def test_cifar10_verify_and_corrupt_and_unsafe_pickles(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(ChecksumError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path, verify=True)  # tiny files are not the official ones
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)

    class Evil:
        def __reduce__(self):
            return (eval, ("1",))  # not print: importing ray replaces builtins.print

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.eval"):
        load_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------- CIFAR-10.1


def write_cifar101(folder, n=6, seed=1):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    np.save(folder / "cifar10.1_v6_data.npy", data)
    np.save(folder / "cifar10.1_v6_labels.npy", labels)
    return data, labels


def test_cifar101(tmp_path):
    data, labels = write_cifar101(tmp_path / "cifar10.1")
    ds = load_dataset("cifar10.1", root=tmp_path)
    assert ds.name == "cifar10.1:v6" and ds.meta["key"] == "cifar10.1:v6"
    assert torch.equal(ds.images, torch.from_numpy(data).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == labels.tolist() and ds.classes == CLASSES
    with pytest.raises(ChecksumError, match="bytes"):
        load_dataset("cifar10.1", root=tmp_path, verify=True)
    with pytest.raises(ValueError, match="one split"):
        load_dataset("cifar10.1", root=tmp_path, split="v4")


def test_cifar101_missing_names_url_and_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10.1", root=tmp_path)
    assert CIFAR101_FILES["data"].url in str(info.value)
    assert str(tmp_path / "cifar10.1" / "cifar10.1_v6_data.npy") in str(info.value)


# --------------------------------------------------------------------------- CIFAR-10-C


@pytest.fixture(scope="module")
def cifar10c_root(tmp_path_factory):
    """All 19 corruptions, 5 severities × 2 images of 4×4 (the real files: × 10,000 of 32×32)."""
    root = tmp_path_factory.mktemp("c10c")
    folder = root / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(2)
    np.save(folder / "labels.npy", rng.integers(0, 10, 10).astype(np.uint8))
    for c in CORRUPTIONS:
        np.save(folder / f"{c}.npy", rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8))
    return root


def test_cifar10c_splits(cifar10c_root):
    folder = cifar10c_root / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy")
    fog = np.load(folder / "fog.npy")
    one = load_dataset("cifar10c", root=cifar10c_root, split="fog/3")
    assert one.name == "cifar10c:fog/3" and len(one) == 2
    assert torch.equal(one.images, torch.from_numpy(fog[4:6]).permute(0, 3, 1, 2))
    assert one.labels.tolist() == labels[4:6].tolist()
    assert len(load_dataset("cifar10c", root=cifar10c_root, split="fog")) == 10
    everything = load_dataset("cifar10c", root=cifar10c_root)
    assert len(everything) == 190 and everything.name == "cifar10c:all"
    k = CORRUPTIONS.index("fog")
    assert torch.equal(everything.images[10 * k : 10 * k + 10], torch.from_numpy(fog).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="severity"):
        load_dataset("cifar10c", root=cifar10c_root, split="fog/6")
    with pytest.raises(ValueError, match="unknown CIFAR-10-C split"):
        load_dataset("cifar10c", root=cifar10c_root, split="rain")


def test_cifar10c_sample_is_the_seeded_uniform_sample(cifar10c_root):
    everything = load_dataset("cifar10c", root=cifar10c_root)
    sample = load_cifar10c(cifar10c_root, "sample", sample_size=25)
    idx = np.random.RandomState(1234).choice(190, size=25, replace=False)
    assert sample.meta["indices"] == idx.tolist()
    assert torch.equal(sample.images, everything.images[torch.from_numpy(idx)])
    assert torch.equal(sample.labels, everything.labels[torch.from_numpy(idx)])
    assert sample.meta["corruption"][0] == CORRUPTIONS[idx[0] // 10]
    assert sample.meta["severity"][0] == (idx[0] % 10) // 2 + 1
    # the paper's sample over the real 950,000 images: np.random.seed(1234); choice(950000, 2000, replace=False)
    full = sis_sample_indices()
    np.random.seed(1234)
    assert np.array_equal(full, np.random.choice(950_000, size=2000, replace=False))
    assert len(set(full.tolist())) == 2000


def test_cifar10c_blocks_and_missing(cifar10c_root, tmp_path):
    blocks = list(iter_cifar10c(cifar10c_root))
    assert len(blocks) == 95 and blocks[0][:2] == ("brightness", 1) and len(blocks[0][2]) == 2
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10c", root=tmp_path)
    assert CIFAR10C_ARCHIVE.url in str(info.value) and str(tmp_path / "CIFAR-10-C") in str(info.value)


def test_evaluate_cifar10c_block_by_block(cifar10c_root):
    from overinterp.models import create_model
    from overinterp.training.evaluation import evaluate_datasets, result_rows

    torch.manual_seed(0)
    model = create_model("smallcnn", width=4, preprocessing="cifar10")
    out = evaluate_datasets(model, ["cifar10c", "cifar10c:fog/2"], root=cifar10c_root, progress=False)
    assert len(out) == 95 + 1 + 1 and out[95]["dataset"] == "cifar10c:all" and out[-1]["dataset"] == "cifar10c:fog/2"
    assert out[95]["n"] == 190 and out[95]["correct"] == sum(o["correct"] for o in out[:95])
    fog2 = next(o for o in out[:95] if o["dataset"] == "cifar10c:fog/2")
    assert fog2["correct"] == out[-1]["correct"] and fog2["n"] == 2
    rows = result_rows(out, model, seed=1)
    assert len(rows) == 2 * 97 and rows[0]["arch"] == "smallcnn" and rows[0]["seed"] == "1"


def test_dataset_specs():
    assert parse_dataset_spec("cifar10:test") == ("cifar10", "test", None)
    assert parse_dataset_spec("CIFAR-10-C:fog/5@/data") == ("cifar10c", "fog/5", "/data")
    assert parse_dataset_spec("folder:train@x.zip") == ("folder", "train", "x.zip")
    with pytest.raises(ValueError, match="unknown dataset"):
        parse_dataset_spec("mnist")
