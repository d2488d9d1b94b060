"""ImageNet validation loader on tiny fake layouts."""

import numpy as np
import pytest
import torch
from PIL import Image

from overinterp.data.imagenet import (
    imagenet_class_names,
    load_imagenet_val,
    load_photo,
    open_imagenet_val,
    resize_center_crop,
    resize_images,
)

SYNSETS = [f"n{10000000 + 7 * i:08d}" for i in range(1000)]  # sorted, 1000 fake synsets


def _img(path, w, h, value):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = value
    arr[:, : w // 2, 1] = 200
    Image.fromarray(arr).save(path)


def _synset_file(path, names=True):
    lines = [f"{s} thing {i}, other name" if names else s for i, s in enumerate(SYNSETS)]
    path.write_text("\n".join(reversed(lines)) + "\n")  # any order: sorted on reading


def test_class_folders_with_a_synset_file(tmp_path):
    root = tmp_path / "val"
    for k, syn in ((3, SYNSETS[3]), (999, SYNSETS[999])):
        (root / syn).mkdir(parents=True)
        for j in range(2):
            _img(root / syn / f"ILSVRC2012_val_{k * 10 + j:08d}.JPEG", 40 + 10 * j, 30, k % 250)
    _synset_file(tmp_path / "LOC_synset_mapping.txt")
    val = open_imagenet_val(tmp_path)  # finds val/ and the synset file beside it
    assert val.layout == "folders" and len(val) == 4
    assert val.labels.tolist() == [3, 3, 999, 999]
    assert val.classes[3] == "thing 3, other name"
    data = val.load([0, 3], crop=16, resize=20)
    assert data.images.shape == (2, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [3, 999]
    assert abs(float(data.images[1, 0].float().mean()) - 999 % 250) < 4  # JPEG: nearly the value written
    assert data.meta["files"][1].endswith("ILSVRC2012_val_00009991.JPEG")


def test_a_partial_folder_set_without_synset_list_is_refused(tmp_path):
    (tmp_path / SYNSETS[0]).mkdir()
    _img(tmp_path / SYNSETS[0] / "a.png", 8, 8, 1)
    with pytest.raises(ValueError, match="1,000"):
        open_imagenet_val(tmp_path)


def test_flat_files_with_devkit_ground_truth(tmp_path):
    ids = [5, 1, 1000]  # ILSVRC2012_IDs of images 1..3
    for n in (1, 2, 3):
        _img(tmp_path / f"ILSVRC2012_val_{n:08d}.JPEG", 24, 32, n)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, ids)) + "\n")
    # ILSVRC2012_ID order is not the sorted order: here ID i ↦ synset of sorted position (i * 7) % 1000
    by_id = [SYNSETS[(i * 7) % 1000] for i in range(1, 1001)]
    (tmp_path / "by_id.txt").write_text("\n".join(by_id))
    with pytest.raises(ValueError, match="meta.mat"):
        open_imagenet_val(tmp_path)
    val = open_imagenet_val(tmp_path, synsets_by_id=tmp_path / "by_id.txt")
    assert val.layout == "flat"
    assert val.labels.tolist() == [(5 * 7) % 1000, 7, 0]
    assert val.classes == imagenet_class_names()  # no synset file: torchvision's names
    assert load_imagenet_val(tmp_path, synsets_by_id=tmp_path / "by_id.txt", crop=8, resize=None).images.shape == (
        3,
        3,
        8,
        8,
    )


def test_devkit_meta_mat_without_scipy_says_what_to_do(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    _img(tmp_path / "ILSVRC2012_val_00000001.JPEG", 8, 8, 1)
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n")
    (tmp_path / "meta.mat").write_bytes(b"MATLAB 5.0")
    with pytest.raises(ValueError, match="SciPy"):
        open_imagenet_val(tmp_path)


def test_flat_files_with_kaggle_solution_csv(tmp_path):
    _synset_file(tmp_path / "LOC_synset_mapping.txt")
    for n in (1, 2):
        _img(tmp_path / f"ILSVRC2012_val_{n:08d}.JPEG", 10, 10, n)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{SYNSETS[42]} 1 2 3 4 {SYNSETS[42]} 5 6 7 8\n"
        f"ILSVRC2012_val_00000001,{SYNSETS[7]} 1 2 3 4\n"
    )
    val = open_imagenet_val(tmp_path)
    assert val.labels.tolist() == [7, 42]
    assert val.classes[42] == "thing 42, other name"


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_imagenet_val(tmp_path / "nope")
    with pytest.raises(ValueError, match="neither"):
        open_imagenet_val(tmp_path)
    _img(tmp_path / "ILSVRC2012_val_00000001.JPEG", 8, 8, 1)
    with pytest.raises(ValueError, match="no ground truth"):
        open_imagenet_val(tmp_path)


def test_resizing_helpers(tmp_path):
    im = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (30, 1))[..., None].repeat(3, 2))
    arr = resize_center_crop(im, 20, 16)  # 60×30 → 40×20 → centre 16×16
    assert arr.shape == (16, 16, 3)
    assert abs(int(arr[0, 8, 0]) - 30) <= 2  # the centre column keeps the centre value
    _img(tmp_path / "p.png", 50, 40, 100)
    x = load_photo(tmp_path / "p.png", (12, 10))
    assert x.shape == (3, 12, 10) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    batch = resize_images([torch.rand(3, 20, 30), torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)], 8)
    assert batch.shape == (2, 3, 8, 8) and float(batch.max()) <= 1
    with pytest.raises(ValueError, match="cannot decode"):
        (tmp_path / "bad.png").write_bytes(b"not a png")
        load_photo(tmp_path / "bad.png", 8)
