"""The synthetic shortcut dataset: deterministic, well-formed, shortcut at the stated rate."""

from __future__ import annotations

import math

import pytest
import torch

from overinterp.data.synthetic import SHORTCUT_COLORS, ShortcutData, make_shortcut_dataset

N = 4000  # large enough for tight rate checks, ~0.1 s to draw


@pytest.fixture(scope="module")
def shortcut() -> ShortcutData:
    return make_shortcut_dataset(N, shortcut_prob=0.95, seed=0)


@pytest.fixture(scope="module")
def clean() -> ShortcutData:
    return make_shortcut_dataset(N, shortcut_prob=None, seed=0)


def _planted_colours(data: ShortcutData) -> torch.Tensor:
    """(n, P_planted, 3) colours at the planted pixels."""
    return torch.stack([data.images[:, :, r, c] for r, c in data.shortcut_pixels], dim=1)


def test_deterministic_given_seed() -> None:
    a = make_shortcut_dataset(200, seed=3)
    b = make_shortcut_dataset(200, seed=3)
    c = make_shortcut_dataset(200, seed=4)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.shortcut_class, b.shortcut_class)
    assert torch.equal(a.shape_masks, b.shape_masks)
    assert not torch.equal(a.images, c.images)


def test_shapes_dtypes_and_range(shortcut: ShortcutData) -> None:
    d = shortcut
    assert d.images.shape == (N, 3, 16, 16) and d.images.dtype == torch.float32
    assert d.labels.shape == (N,) and d.labels.dtype == torch.int64
    assert d.shortcut_class.shape == (N,) and d.shortcut_class.dtype == torch.int64
    assert d.shape_masks.shape == (N, 16, 16) and d.shape_masks.dtype == torch.bool
    assert d.shortcut_mask.shape == (16, 16) and d.shortcut_mask.dtype == torch.bool
    assert d.images.min() >= 0.0 and d.images.max() <= 1.0
    assert torch.isfinite(d.images).all()
    assert len(d) == N and d.num_classes == 4 and len(d.class_names) == 4
    assert len(set(d.class_names)) == 4
    assert d.shortcut_colors.shape == (4, 3)


def test_other_sizes_and_class_counts() -> None:
    d = make_shortcut_dataset(50, size=24, num_classes=8, seed=1)
    assert d.images.shape == (50, 3, 24, 24) and d.shortcut_mask.shape == (24, 24)
    assert int(d.labels.max()) == 7
    with pytest.raises(ValueError):
        make_shortcut_dataset(10, num_classes=9)
    with pytest.raises(ValueError):
        make_shortcut_dataset(10, shortcut_prob=1.5)
    assert len(make_shortcut_dataset(0)) == 0


def test_planted_pixels_few_fixed_and_off_centre(shortcut: ShortcutData) -> None:
    d = shortcut
    assert 3 <= len(d.shortcut_pixels) <= 4
    assert int(d.shortcut_mask.sum()) == len(d.shortcut_pixels)
    for r, c in d.shortcut_pixels:
        assert d.shortcut_mask[r, c]
        assert math.hypot(r - 7.5, c - 7.5) > 4.0  # well away from the centre
    # The same pixels in every split and seed.
    assert make_shortcut_dataset(10, seed=9, shortcut_prob=None).shortcut_pixels == d.shortcut_pixels


def test_planted_colours_are_saturated_class_colours(shortcut: ShortcutData) -> None:
    d = shortcut
    palette = torch.tensor(SHORTCUT_COLORS[:4])
    assert torch.equal(d.shortcut_colors, palette)
    expected = palette[d.shortcut_class].unsqueeze(1).expand(-1, len(d.shortcut_pixels), -1)
    assert torch.equal(_planted_colours(d), expected)
    # Distinct per class and far from the mid-grey dataset mean.
    assert torch.cdist(palette, palette).add(torch.eye(4) * 9).min() >= 1.0
    assert (palette - 0.5).norm(dim=1).min() >= 0.8


def test_shortcut_present_at_stated_rate(shortcut: ShortcutData) -> None:
    d = shortcut
    agree = (d.shortcut_class == d.labels).float().mean().item()
    assert abs(agree - 0.95) < 0.015  # binomial sd ≈ 0.0034
    assert d.shortcut_agreement == pytest.approx(agree)
    # The 5% that disagree show some other class's colour, spread over all classes.
    wrong = d.shortcut_class[d.shortcut_class != d.labels]
    assert torch.bincount(wrong, minlength=4).min() > 0
    for rate in (0.0, 1.0):
        e = make_shortcut_dataset(400, shortcut_prob=rate, seed=2)
        assert e.shortcut_agreement == rate


def test_clean_split_uninformative(clean: ShortcutData) -> None:
    d = clean
    assert d.shortcut_prob is None
    assert abs(d.shortcut_agreement - 0.25) < 0.03  # chance; sd ≈ 0.007
    # Within every class the planted colour is spread evenly over all classes.
    for k in range(4):
        freq = torch.bincount(d.shortcut_class[d.labels == k], minlength=4).float() / (N / 4)
        assert (freq - 0.25).abs().max() < 0.06, (k, freq)


def test_classes_balanced() -> None:
    for n in (4000, 1001):
        counts = torch.bincount(make_shortcut_dataset(n, seed=5).labels, minlength=4)
        assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == n


def test_shapes_carry_the_class_and_stay_clear_of_planted(shortcut: ShortcutData) -> None:
    d = shortcut
    sizes = d.shape_masks.sum(dim=(1, 2))
    assert int(sizes.min()) >= 4  # every image shows its shape
    assert not (d.shape_masks & d.shortcut_mask).any()
    # The shape's pixels stand out from the image's background (differ in colour).
    i = 0
    shape_px = d.images[i][:, d.shape_masks[i]].mean(dim=1)
    back = ~d.shape_masks[i] & ~d.shortcut_mask
    back_px = d.images[i][:, back].mean(dim=1)
    assert (shape_px - back_px).norm() > 0.1
    # The shapes' positions vary.
    centres = torch.stack([m.nonzero().float().mean(0) for m in d.shape_masks[:200]])
    assert centres.std(0).min() > 0.5
