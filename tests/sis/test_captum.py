"""BackselectAttribution: backward selection's removal rank as a Captum-style attribution map."""

import sys

import pytest
import torch
from torch import nn

from overinterp import Exact, KStep, backselect, patch_features
from overinterp.sis.captum import HAS_CAPTUM, BackselectAttribution, rank_map

# per-pixel weights of a 2×3 image; with x = 1 and baseline 0 removing pixel j lowers the
# log-odds of class 0 by 2·W[j] (two channels), so class 0 removes ascending W, class 1 descending
W = torch.tensor([[3.0, -1.0, 2.0], [0.5, 5.0, -2.0]], dtype=torch.float64)
# removal position of each pixel (row-major id) for class 0: ids 5, 1, 3, 2, 0, 4 → ranks k/6
POS0 = torch.tensor([[5, 2, 4], [3, 6, 1]], dtype=torch.float64)
RANK0, REVERSE0 = POS0 / 6, (7 - POS0) / 6


def linear_model() -> nn.Module:
    """Two classes: logits ``[Σ_c Σ_j W_j x_cj, 0]`` on (N, 2, 2, 3) inputs."""
    lin = nn.Linear(12, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = W.flatten().repeat(2)
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()
    images = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model.eval(), images


def test_rank_map_on_linear_model_known_by_hand():
    x = torch.ones(2, 2, 2, 3, dtype=torch.float64)
    attr = BackselectAttribution(linear_model()).attribute(x, target=[0, 1])
    assert attr.shape == x.shape and attr.dtype == x.dtype
    assert torch.equal(attr[0], RANK0.expand(2, 2, 3))  # same rank on both channels of a pixel
    assert torch.equal(attr[1], REVERSE0.expand(2, 2, 3))  # class 1: the reverse order
    assert attr.min() == 1 / 6 and attr.max() == 1.0


def test_baselines_change_the_order():
    # masking to 2 instead of 0: removing pixel j changes class 0's log-odds by 2·W[j]·(2 − 1) — the reverse
    x = torch.ones(1, 2, 2, 3, dtype=torch.float64)
    attr = BackselectAttribution(linear_model()).attribute(x, baselines=torch.full_like(x, 2.0), target=0)
    assert torch.equal(attr[0, 0], REVERSE0)


def test_feature_mask_equals_backselect_with_the_group_map(tiny):
    model, images = tiny
    groups = patch_features(6, 6, 2)  # (6, 6) ids 0..8
    trace = backselect(model, images, features=groups, progress=False)
    want = rank_map(trace, torch.float64)
    explainer = BackselectAttribution(model)
    # Captum's broadcastable forms, and ids that are not 0..G-1 (order kept: 10·id + 7)
    for mask in (groups, groups.view(1, 1, 6, 6), groups.expand(3, 3, 6, 6), groups * 10 + 7):
        assert torch.equal(explainer.attribute(images, feature_mask=mask), want)
    assert torch.equal(explainer.last_trace.order_padded, trace.order_padded)
    # the map is constant on each patch and takes the values k/9
    assert set(want[0, 0].unique().mul(9).round().long().tolist()) == set(range(1, 10))
    assert torch.equal(want[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3), want)


def test_per_image_feature_masks_and_a_tuple_input(tiny):
    model, images = tiny
    per = torch.stack([patch_features(6, 6, 2), patch_features(6, 6, 3), patch_features(6, 6, 2)])
    (attr,) = BackselectAttribution(model, KStep(k=2)).attribute((images,), feature_mask=(per,))
    want = rank_map(backselect(model, images, method=KStep(k=2), features=per, progress=False), torch.float64)
    assert torch.equal(attr, want)
    assert torch.equal(attr[1].unique().mul(4).round().long(), torch.arange(1, 5))  # P = 4 on image 1


def test_batching_invariance(tiny):
    model, images = tiny
    explainer = BackselectAttribution(model, batch_size=5)
    together = explainer.attribute(images, target=[0, 2, 1])
    alone = torch.cat([explainer.attribute(images[i : i + 1], target=t) for i, t in enumerate([0, 2, 1])])
    assert torch.equal(together, alone)


def test_target_forms_agree(tiny):
    model, images = tiny
    explainer = BackselectAttribution(model, Exact(), batch_size=16)
    as_list = explainer.attribute(images, target=[2, 0, 1])
    assert torch.equal(explainer.attribute(images, target=torch.tensor([2, 0, 1])), as_list)
    assert torch.equal(explainer.last_trace.target, torch.tensor([2, 0, 1]))
    one = explainer.attribute(images, target=1)
    assert torch.equal(explainer.attribute(images, target=torch.tensor(1)), one)
    assert torch.equal(explainer.attribute(images, target=[1, 1, 1]), one)
    assert not torch.equal(one, as_list)
    predicted = model(images).argmax(1)
    assert torch.equal(explainer.attribute(images), explainer.attribute(images, target=predicted))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(feature_mask=torch.zeros(5, 6, dtype=torch.int64)), "feature_mask has shape"),
        (dict(feature_mask=torch.zeros(2, 6, 6, dtype=torch.int64)), "feature_mask has shape"),
        (dict(feature_mask=torch.zeros(6, 6)), "integer feature ids"),
        (dict(feature_mask=torch.arange(3).view(1, 3, 1, 1).expand(1, 3, 6, 6)), "all channels"),
        (dict(target=3), r"lie in \[0, 3\)"),
        (dict(target=[0, 1, -1]), r"lie in \[0, 3\)"),
        (dict(target=[0, 1]), "target must be an int or shape"),
        (dict(target=[(0, 1)] * 3), "one integer class per input"),
        (dict(baselines=torch.rand(3, 3, 6, 6, dtype=torch.float64)), "baselines differ"),
        (dict(baselines=torch.zeros(3, 3, 5, 5, dtype=torch.float64)), "baselines has shape"),
    ],
)
def test_bad_input_is_a_clear_value_error(tiny, kwargs, match):
    model, images = tiny
    with pytest.raises(ValueError, match=match):
        BackselectAttribution(model).attribute(images, **kwargs)


def test_bad_inputs_shape_and_tuple_length(tiny):
    model, images = tiny
    with pytest.raises(ValueError, match=r"inputs must be a tensor \(N, C, H, W\)"):
        BackselectAttribution(model).attribute(images[0])
    with pytest.raises(ValueError, match="tuple of 2"):
        BackselectAttribution(model).attribute((images, images))


@pytest.mark.skipif(not HAS_CAPTUM, reason="captum is not installed (pip install 'overinterp[captum]')")
def test_is_a_captum_attribution_and_visualize_image_attr_runs(tiny):
    import matplotlib

    matplotlib.use("Agg")
    from captum.attr import Attribution, visualization

    model, images = tiny
    explainer = BackselectAttribution(model)
    assert isinstance(explainer, Attribution) and not explainer.multiplies_by_inputs
    attr = explainer.attribute(images, feature_mask=patch_features(6, 6, 3))
    fig, ax = visualization.visualize_image_attr(
        attr[0].permute(1, 2, 0).numpy(),
        images[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="positive",
        show_colorbar=True,
        use_pyplot=False,
    )
    assert fig is not None and ax.images  # an image was drawn


def test_works_standalone_without_captum(monkeypatch):
    import importlib.util

    import overinterp.sis.captum as mod

    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum…` now raises ImportError
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    spec = importlib.util.spec_from_file_location("captum_free_copy", mod.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.HAS_CAPTUM is False and copy.BackselectAttribution.__mro__[1] is object
    x = torch.ones(1, 2, 2, 3, dtype=torch.float64)
    assert torch.equal(copy.BackselectAttribution(linear_model()).attribute(x, target=0)[0, 1], RANK0)
