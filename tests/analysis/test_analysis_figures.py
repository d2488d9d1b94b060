"""Location maps, example grids, the score and subset predictions, on hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch
from analysis_helpers import make_trace, values_for_size

from overinterp.analysis import (
    find_result,
    location_frequency,
    mask_with_baseline,
    masked_images,
    model_score,
    pick_examples,
    plot_ensemble_sis,
    plot_heatmap_grid,
    plot_sis_examples,
    subset_predictions,
    to_display,
)


@pytest.fixture
def trace():
    # 2×2 images, order = removal order; keep_mask(0.25) keeps the last-removed pixel
    return make_trace(
        [values_for_size(1, 4), values_for_size(2, 4), [1.0, 0.5, 0.2, 0.1]],
        targets=[0, 1, 1],
        labels=[0, 1, 0],
        orders=[[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 3, 2]],
    )


def test_subset_and_sis_location_maps_by_hand(trace) -> None:
    keep = trace.keep_mask(0.25)  # last removed: pixel 3, pixel 0, pixel 2
    assert location_frequency(keep).tolist() == [[1 / 3, 0.0], [1 / 3, 1 / 3]]
    sis = trace.find_sis(0.9)  # image 0: {3}; image 1: {1, 0}; image 2: none
    valid = torch.tensor([s is not None for s in sis])
    freq = location_frequency(trace.sis_mask(sis), valid=valid)
    assert freq.tolist() == [[0.5, 0.5], [0.0, 0.5]]


def test_heatmap_grid_shares_one_scale() -> None:
    a, b = torch.zeros(3, 3), torch.zeros(3, 3)
    a[0, 0], b[1, 1] = 0.5, 1.0
    fig = plot_heatmap_grid([a, b], ["a", "b"], ["conf 0.9", "conf 0.8"], suptitle="x")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 2 and all(ax.images[0].get_clim() == (0.0, 1.0) for ax in axes)
    assert axes[0].get_xlabel() == "conf 0.9"
    fig.clf()


def test_pick_examples_first_eligible_per_class() -> None:
    labels = torch.tensor([2, 0, 0, 1, 2, 1, 0])
    eligible = torch.tensor([True, False, True, False, True, True, True])
    assert pick_examples(eligible, labels, 1, num_classes=4) == [2, 5, 0]
    assert pick_examples(eligible, labels, 2) == [2, 6, 5, 0, 4]


def test_display_unnormalises_and_masks_visibly() -> None:
    pixels = torch.rand(2, 3, 4, 4)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    norm = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(to_display(norm, (mean, std)), pixels, atol=1e-6)
    keep = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    keep[:, :, 0, 0] = True
    shown = masked_images(norm, keep, "checkerboard", normalization=(mean, std))
    assert torch.allclose(shown[:, :, 0, 0], pixels[:, :, 0, 0], atol=1e-6)
    checks = shown[0, 0, 2:, :]  # masked: two grey levels, 2-pixel checks
    assert set(torch.round(checks * 100).unique().tolist()) == {35.0, 65.0}


def test_example_grids_have_expected_panels() -> None:
    images = (torch.rand(3, 3, 4, 4) * 255).to(torch.uint8)
    keep = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    keep[:, :, :2, :2] = True
    fig = plot_sis_examples(images, keep, ["a", "b", "c"], style="grey")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6
    masked = shown[3].images[0].get_array()  # second row, first column: the SIS alone
    assert float(masked[3, 3, 0]) == pytest.approx(0.5)  # masked pixel drawn grey
    fig.clf()
    none = torch.zeros_like(keep)
    fig = plot_ensemble_sis(images, [("ens", keep), ("m1", none)], ["a", "b", "c"])
    assert sum(1 for ax in fig.axes if ax.images) == 6  # image + ensemble per row; m1 has no SIS
    assert sum(1 for ax in fig.axes for t in ax.texts if t.get_text() == "no SIS") == 3
    fig.clf()


def test_score_reads_results_rows(trace) -> None:
    rows = [
        {
            "metric": "accuracy",
            "model": "m",
            "fingerprint": "f1",
            "evaluate_on": "bs5",
            "dataset": "d",
            "value": 0.9,
            "n": 10,
        },
        {
            "metric": "accuracy",
            "model": "m",
            "fingerprint": "f2",
            "evaluate_on": "bs5",
            "dataset": "d",
            "value": 0.1,
            "n": 10,
        },
        {
            "metric": "accuracy",
            "model": "m",
            "fingerprint": "f1",
            "evaluate_on": "full",
            "dataset": "d",
            "value": 0.5,
            "n": 10,
        },
        {
            "metric": "confidence_drop_mean",
            "model": "m",
            "fingerprint": "",
            "evaluate_on": "bs5",
            "dataset": "e",
            "value": 0.2,
        },
    ]
    assert find_result(rows, "accuracy", fingerprint="f1", model="m", evaluate_on="bs5")["value"] == 0.9
    assert find_result(rows, "accuracy", fingerprint="f3", model="m", evaluate_on="bs5") is None
    s = model_score(trace, model="m", dataset="d", fingerprint="f1", rows=rows)
    assert s.bs5_accuracy == 0.9 and s.bs5_n == 10 and s.confidence_drop == 0.2  # name match, other dataset
    # τ = 0.99: images 0 and 1 (logit 8) have SIS of 1 and 2 of 4 features
    assert s.sis_n == 2 and s.mean_sis_fraction == pytest.approx(0.375) and not s.hints
    bare = model_score(trace, model="m", dataset="d", fingerprint="f1", rows=[], job_dir="J")
    assert bare.bs5_accuracy is None and bare.confidence_drop is None
    assert "overinterp subsets evaluate --job J" in bare.hints["bs5_accuracy"]


def test_subset_predictions_by_hand() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 2.0]]))
    images = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    keep = torch.tensor([[[[True, False], [False, False]]]])
    x = mask_with_baseline(images, keep, torch.tensor([0.5]))
    assert torch.allclose(x, torch.tensor([[[[0.2, 0.5], [0.5, 0.5]]]]))
    out = subset_predictions(net, images, keep, torch.tensor([0]), torch.tensor([0.5]))
    p1 = 1 / (1 + math.exp(0.2 - 1.0))  # logits 0.2 vs 1.0
    assert out["prediction"].tolist() == [1]
    assert out["confidence"][0] == pytest.approx(p1) and out["target_probability"][0] == pytest.approx(1 - p1)
