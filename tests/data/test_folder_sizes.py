"""Image folders as users have them: any sizes (resized and centre-cropped by one rule), flat and unlabelled."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from overinterp.data.folder import fit_image, load_image_folder


def _save(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_fit_image_scales_to_cover_then_centre_crops():
    """A 4×8 image (H×W) to 2×2: scaled by 1/2 to 2×4, the middle 2 columns kept. Wrong
    implementations caught: a plain resize (distorts the aspect ratio), a corner crop."""
    img = np.zeros((4, 8, 3), dtype=np.uint8)
    img[:, 2:6] = 200  # the middle half is bright
    out = fit_image(img, 2)
    assert out.shape == (2, 2, 3) and (out > 150).all()
    tall = fit_image(np.zeros((9, 3, 3), dtype=np.uint8), (4, 2))
    assert tall.shape == (4, 2, 3)
    same = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    assert fit_image(same, 2) is same


def test_a_flat_folder_of_photos_of_any_sizes_is_read_unlabelled_at_one_size(tmp_path):
    _save(tmp_path / "a.png", 30, 20, 0)
    _save(tmp_path / "b.jpg", 17, 41, 1)
    _save(tmp_path / "c.bmp", 12, 12, 2)
    with pytest.raises(ValueError, match="give size="):
        load_image_folder(tmp_path)
    d = load_image_folder(tmp_path, size=16)
    assert tuple(d.images.shape) == (3, 3, 16, 16)
    assert d.labels.tolist() == [-1, -1, -1] and d.classes is None and d.meta["unlabelled"] is True
    assert d.meta["files"] == ["a.png", "b.jpg", "c.bmp"]


def test_class_folders_with_mixed_sizes_are_fitted_and_keep_their_labels(tmp_path):
    for k, cls in enumerate(["bird", "cat"]):
        (tmp_path / cls).mkdir()
        _save(tmp_path / cls / "x.png", 20 + k, 33, k)
    d = load_image_folder(tmp_path, size=(8, 10))
    assert tuple(d.images.shape) == (2, 3, 8, 10) and d.labels.tolist() == [0, 1] and d.classes == ["bird", "cat"]
    assert "unlabelled" not in d.meta
