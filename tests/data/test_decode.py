"""Bounded decoding (issue 26, items 7 and 9): images over the pixel limit are refused from
their header, large ones are decoded downscaled, arrays that would not fit are refused from
their header, and ``evaluate`` on two 6000×6000 PNGs stays under 1 GB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from overinterp.data.decode import check_array_file, decode_image, image_limits
from overinterp.data.files import load_images
from overinterp.errors import UserInputError


def _png(path, w: int, h: int) -> None:
    a = np.zeros((h, w, 3), np.uint8)
    a[::7, :, 0] = 255
    Image.fromarray(a).save(path)


def test_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """Guards against: checking the size after ``.load()``/``convert`` (the decode, the memory, has happened)."""
    _png(tmp_path / "big.png", 3000, 2000)

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UserInputError, match=r"big.png is 3000×2000 = 6.0 million pixels, over the limit of 1 million"):
        decode_image(tmp_path / "big.png", max_pixels=1_000_000)
    monkeypatch.setenv("OVERINTERP_MAX_IMAGE_PIXELS", "5000000")
    with pytest.raises(UserInputError, match="over the limit of 5 million"):
        load_images(tmp_path / "big.png")


def test_large_images_are_decoded_downscaled_keeping_the_aspect(tmp_path, monkeypatch):
    """Guards against: no cap (a folder of photos decoded at full size), or a cap that squashes the aspect."""
    _png(tmp_path / "wide.png", 2000, 1000)
    assert decode_image(tmp_path / "wide.png", max_side=256).shape == (128, 256, 3)
    assert decode_image(tmp_path / "wide.png", max_side=0).shape == (1000, 2000, 3)  # 0: no cap
    Image.fromarray(np.full((4000, 3000, 3), 200, np.uint8)).save(tmp_path / "photo.jpg")
    assert decode_image(tmp_path / "photo.jpg", max_side=400).shape == (400, 300, 3)
    small = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    assert np.array_equal(decode_image(tmp_path / "small.png"), small)  # under the cap: the exact pixels
    monkeypatch.setenv("OVERINTERP_MAX_IMAGE_SIDE", "100")
    assert image_limits() == (100_000_000, 100)
    assert load_images(tmp_path / "wide.png").images.shape == (1, 3, 50, 100)
    monkeypatch.setenv("OVERINTERP_MAX_IMAGE_SIDE", "lots")
    with pytest.raises(UserInputError, match="OVERINTERP_MAX_IMAGE_SIDE"):
        image_limits()


def test_array_files_are_checked_from_their_headers(tmp_path):
    """Guards against: ``np.load`` of a header that claims 8 TB (MemoryError), or of a corrupt
    file (BadZipFile traceback)."""
    with open(tmp_path / "huge.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with pytest.raises(UserInputError, match=r"the arrays of .*huge.npy would need 8 TB of memory"):
        check_array_file(tmp_path / "huge.npy")
    with pytest.raises(UserInputError, match="would need"):
        load_images(tmp_path / "huge.npy")
    np.savez(tmp_path / "ok.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    check_array_file(tmp_path / "ok.npz")
    (tmp_path / "bad.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    with pytest.raises(UserInputError, match="not a valid .npz file"):
        load_images(tmp_path / "bad.npz")


@pytest.mark.slow
def test_evaluate_on_two_6000_pixel_pngs_stays_under_1_gb(tmp_path):
    """Issue 26 item 9: the attack took 8.07 GB resident. Guards against decoding full-size
    images into the dataset (or any cap applied after stacking)."""
    from faults.bigimages import evaluate_peak_rss

    rc, peak_mb, err = evaluate_peak_rss(tmp_path)
    assert rc == 0, err
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB\n{err}"


def test_a_folder_too_large_for_the_memory_is_refused_while_read(tmp_path, monkeypatch):
    """Guards against decoding every image of a folder before any check (the OOM killer, not a
    message): the images held are counted against half the available memory as they are read."""
    import overinterp.data.decode as decode
    from overinterp.data.folder import load_image_folder

    for k in range(3):
        (tmp_path / "f" / f"c{k}").mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "f" / f"c{k}" / "x.png")
    assert len(load_image_folder(tmp_path / "f")) == 3
    monkeypatch.setattr(decode, "available_memory", lambda: 2 * 2 * 64 * 64 * 3)  # room for two images
    with pytest.raises(UserInputError, match=r"the 3 images of .*f need more than the 24.6 kB of memory"):
        load_image_folder(tmp_path / "f")
    with pytest.raises(UserInputError, match="need more than"):
        load_images(tmp_path / "f")
    assert len(load_image_folder(tmp_path / "f", limit=2)) == 2
