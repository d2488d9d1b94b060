"""Pixel-subset datasets: counts, seeding, joint augmentation, mask-only control."""

from __future__ import annotations

import math

import pytest
import torch

from overinterp.data.augment import random_crop_flip
from overinterp.data.subsets import (
    RANDOM_SUBSET_SEEDS,
    PixelSubsets,
    apply_stacked,
    augment_once,
    random_keep_masks,
    random_subset_seed,
    subset_label,
)


def _subsets(kind="bs", n=6, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    keep = torch.rand(n, 1, h, w, generator=g) < 0.2
    return PixelSubsets(images, torch.arange(n) % 3, keep, torch.tensor([0.4, 0.5, 0.6]), kind)


def test_random_masks_count_seed_and_independence():
    pos = torch.tensor([3, 7, 11])
    m = random_keep_masks(pos, (3, 32, 32), 0.05, seed=1)
    assert m.shape == (3, 1, 32, 32)
    assert m.flatten(1).sum(1).tolist() == [math.ceil(0.05 * 1024)] * 3 == [52] * 3
    assert torch.equal(m, random_keep_masks(pos, (3, 32, 32), 0.05, seed=1))
    # image 7's mask does not depend on which other images are in the set
    assert torch.equal(m[1], random_keep_masks(torch.tensor([7]), (3, 32, 32), 0.05, seed=1)[0])
    assert not torch.equal(m, random_keep_masks(pos, (3, 32, 32), 0.05, seed=2))
    assert not torch.equal(m[0], m[1])
    groups = torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)  # 2×2 patches of 8×8
    gm = random_keep_masks(pos, (3, 8, 8), 0.25, seed=0, features=groups)
    assert gm.flatten(1).sum(1).tolist() == [16] * 3  # 4 patches × 4 pixels
    for frac in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            random_keep_masks(pos, (3, 8, 8), frac)


def test_pixels_keep_values_and_fill():
    s = _subsets()
    x = s.pixels()
    k = s.keep.expand_as(x)
    assert torch.equal(x[k], (s.images.float() / 255)[k])
    fill = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1).expand_as(x)
    assert torch.equal(x[~k], fill[~k])
    assert (
        s.label == "bs5"
        and subset_label("random", 0.05) == "random5"
        and subset_label("bs", 0.05, "probability") == "bs5-prob"
    )
    assert torch.equal(s.kept_counts(), s.keep.flatten(1).sum(1))


def test_mask_only_has_no_pixel_values():
    s = _subsets("mask")
    x = s.pixels()
    assert torch.equal(x, s.keep.float().expand_as(x))


def test_stacked_without_augmentation_equals_pixels():
    s = _subsets()
    x = s.stacked().float() / 255
    assert torch.equal(apply_stacked(x, s.fill), s.pixels())


def test_joint_crop_flip_moves_image_and_mask_together():
    s = _subsets()
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    aug = apply_stacked(random_crop_flip(s.stacked().float() / 255, g1, padding=2), s.fill)
    # reference: crop/flip image and mask separately with the same draws; padding is masked
    img = random_crop_flip(torch.cat([s.images.float() / 255, s.keep.float()], 1), g2, padding=2)
    keep = img[:, 3:] > 0.5
    expected = torch.where(keep, img[:, :3], s.fill.unsqueeze(0))
    assert torch.equal(aug, expected)
    assert not torch.equal(aug, s.pixels())  # something moved


def test_bad_input():
    s = _subsets()
    with pytest.raises(ValueError, match="keep"):
        PixelSubsets(s.images, s.labels, s.keep[:, :, :4], s.fill)
    with pytest.raises(TypeError, match="uint8"):
        PixelSubsets(s.images.float(), s.labels, s.keep, s.fill)
    with pytest.raises(ValueError, match="kind"):
        PixelSubsets(s.images, s.labels, s.keep, s.fill, kind="other")


def test_dataset_items_and_augmentation():
    s = _subsets()
    x, y = s[2]
    assert torch.equal(x, s.pixels()[2]) and y == int(s.labels[2])
    s.augment, s.padding = True, 2
    xs = [s[2][0] for _ in range(6)]
    assert any(not torch.equal(a, x) for a in xs)  # crops/flips happen
    for a in xs:  # every shown pixel is either the fill or a pixel value of the image
        fill = s.fill.expand_as(a)
        assert (
            (a == fill).all(0)
            | (a.unsqueeze(-1).unsqueeze(-1) == (s.images[2].float() / 255).unsqueeze(1).unsqueeze(1))
            .flatten(-2)
            .any(-1)
            .all(0)
        ).all()
    loader = torch.utils.data.DataLoader(s, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 8, 8) and yb.tolist() == s.labels[:4].tolist()


def test_negative_index_and_subset_keep_options():
    s = _subsets()
    assert torch.equal(s[-1][0], s.pixels()[-1])
    with pytest.raises(IndexError):
        s[len(s)]
    s.augment, s.padding, s.seed = True, 2, 7
    sub = s.subset(slice(0, 3))
    assert (sub.augment, sub.padding, sub.seed) == (True, 2, 7)


def test_random_masks_are_drawn_per_split_with_the_authors_seeds():
    assert RANDOM_SUBSET_SEEDS == {"train": 1234, "test": 5678}
    pos = torch.arange(6)
    train = random_keep_masks(pos, (3, 32, 32), 0.05, split="train")
    test = random_keep_masks(pos, (3, 32, 32), 0.05, split="test")
    assert torch.equal(train, random_keep_masks(pos, (3, 32, 32), 0.05, seed=1234))
    assert torch.equal(test, random_keep_masks(pos, (3, 32, 32), 0.05, seed=5678))
    assert torch.equal(test, random_keep_masks(pos, (3, 32, 32), 0.05))  # test is the default split
    # test image i no longer gets training image i's mask; within a split every call gives the same masks
    assert all(not torch.equal(train[i], test[i]) for i in range(6))
    assert torch.equal(train, random_keep_masks(pos, (3, 32, 32), 0.05, split="train"))
    assert random_subset_seed("train") == 1234 and random_subset_seed("train", 3) == 3
    with pytest.raises(ValueError, match="split must be one of"):
        random_keep_masks(pos, (3, 8, 8), 0.05, split="val")
    with pytest.raises(ValueError, match="seed must be an integer"):
        random_subset_seed("test", 1.5)


def _one_column(n=32, h=6, w=6):
    """Distinct pixel values everywhere; only column 0 kept."""
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    keep = torch.zeros(n, 1, h, w, dtype=torch.bool)
    keep[..., 0] = True
    return PixelSubsets(images, torch.arange(n) % 3, keep, torch.tensor([0.4, 0.5, 0.6]), "random")


def test_augment_once_flips_the_image_but_not_its_mask():
    """The authors' Table S1 pipeline: the kept locations stay where they were on the unaugmented
    image while the pixel values under them come from the flipped image; the joint augmentation
    moves the mask with the image instead (so it keeps the same pixel values)."""
    s = _one_column()
    once = augment_once(s, seed=3, padding=0, flip=True)
    assert torch.equal(once.keep, s.keep) and not once.augment and once.meta["augment"] == "once"
    flipped = [i for i in range(len(s)) if torch.equal(once.images[i], s.images[i].flip(2))]
    kept = [i for i in range(len(s)) if torch.equal(once.images[i], s.images[i])]
    assert sorted(flipped + kept) == list(range(len(s))) and 5 <= len(flipped) <= 27  # about half flipped
    i = flipped[0]
    orig = s.images[i].float() / 255
    paper = once.pixels()[i]
    # paper mode: column 0 kept, showing what was the image's last column
    assert torch.equal(paper[:, :, 0], orig[:, :, -1])
    assert torch.equal(paper[:, :, 1:], s.fill[:, :, 1:])
    # joint mode, with a flip: the mask moves to the last column and still shows the original column 0
    joint = apply_stacked(s.subset(slice(i, i + 1)).stacked().float().flip(3) / 255, s.fill)[0]
    assert torch.equal(joint[:, :, -1], orig[:, :, 0]) and torch.equal(joint[:, :, :-1], s.fill[:, :, :-1])
    assert not torch.equal(paper, joint)


def test_augment_once_crops_are_fixed_per_position_and_seed():
    s = _one_column()
    a = augment_once(s, seed=1, padding=2)
    assert torch.equal(a.keep, s.keep)
    assert torch.equal(a.images, augment_once(s, seed=1, padding=2).images)  # built once, reproducibly
    assert not torch.equal(a.images, augment_once(s, seed=2, padding=2).images)
    assert (a.images == 0).any()  # zero padding brought in by some crops
    # image i's draw depends only on (seed, position), not on the other images in the set
    few = augment_once(s.subset(slice(5, 8)), seed=1, padding=2, positions=torch.arange(5, 8))
    assert torch.equal(few.images, a.images[5:8])
    assert torch.equal(augment_once(s, padding=0, flip=False).images, s.images)
    with pytest.raises(ValueError, match="positions"):
        augment_once(s, positions=torch.arange(3))
    with pytest.raises(ValueError, match="padding"):
        augment_once(s, padding=-1)
    s.augment = True
    with pytest.raises(ValueError, match="already crop and flip"):
        augment_once(s)
