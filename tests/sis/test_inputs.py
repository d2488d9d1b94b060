"""Clear errors on bad input, for every backward-selection method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import overinterp
from overinterp import backselect
from reference import TinyCNN


@pytest.fixture()
def model():
    return TinyCNN(num_classes=3, height=4, width=4, seed=0)


@pytest.fixture()
def x():
    return torch.rand(2, 3, 4, 4)


METHODS = [
    overinterp.Exact(),
    overinterp.KStep(2),
    overinterp.Adaptive(step_fraction=0.5, tail=0.25),
    overinterp.Adaptive(step_fraction=0.5, tail=0.25, head="gradient"),
    overinterp.BatchedGradient(2),
    overinterp.Screened(rescore_top=2),
]


@pytest.fixture(params=METHODS, ids=[f"{m.name}-{i}" for i, m in enumerate(METHODS)])
def run(request):
    def call(model, x, **kw):
        kw.setdefault("method", request.param)
        return backselect(model, x, progress=False, **kw)

    return call


def test_training_mode_refused(model, x, run):
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        run(model, x)
    model.eval()
    model.bn.train()  # one sub-module is enough
    with pytest.raises(ValueError, match="bn"):
        run(model, x)


@pytest.mark.parametrize(
    "images, err, match",
    [
        (torch.rand(3, 4), ValueError, "shape"),
        (torch.rand(1, 1, 2, 3, 4, 4), ValueError, "shape"),
        (torch.randint(0, 255, (2, 3, 4, 4), dtype=torch.uint8), TypeError, "uint8"),
        (torch.zeros(0, 3, 4, 4), ValueError, "empty"),
        ("not a tensor", TypeError, "Tensor"),
    ],
)
def test_bad_images(model, images, err, match, run):
    with pytest.raises(err, match=match):
        run(model, images)


def test_nan_and_inf_images(model, x, run):
    for v in (float("nan"), float("inf")):
        y = x.clone()
        y[0, 0, 0, 0] = v
        with pytest.raises(ValueError, match="NaN or inf"):
            run(model, y)


def test_model_output_checked(x, run):
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum((1, 2, 3))

    class Tuple(nn.Module):
        def forward(self, x):
            return (x.flatten(1)[:, :3], None)

    class OneClass(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1]

    class NaNs(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3] * float("nan")

    for m, match in [(Flat(), "shape"), (Tuple(), "tuple"), (OneClass(), "at least 2"), (NaNs(), "NaN")]:
        with pytest.raises((ValueError, TypeError, FloatingPointError), match=match):
            run(m.eval(), x)


def test_bad_targets(model, x, run):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        run(model, x, target=[0, 3])
    with pytest.raises(ValueError, match="shape"):
        run(model, x, target=[0, 1, 2])
    with pytest.raises(TypeError, match="integer"):
        run(model, x, target=torch.tensor([0.5, 1.0]))


def test_bad_mask_values(model, x, run):
    with pytest.raises(ValueError, match="mask_value"):
        run(model, x, mask_value=torch.zeros(2))
    with pytest.raises(ValueError, match="mask_value"):
        run(model, x, mask_value=torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        run(model, x, mask_value=float("nan"))


def test_malformed_group_maps(model, x, run):
    with pytest.raises(ValueError, match="start at 0"):
        run(model, x, features=torch.ones(4, 4, dtype=torch.long))
    gap = torch.zeros(4, 4, dtype=torch.long)
    gap[0, 0] = 2  # id 1 unused
    with pytest.raises(ValueError, match="missing"):
        run(model, x, features=gap)
    with pytest.raises(ValueError, match="shape"):
        run(model, x, features=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="expected"):
        run(model, x, features=torch.zeros(5, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        run(model, x, features=torch.zeros(4, 4))


def test_batch_size_and_method_checked(model, x, run):
    with pytest.raises(ValueError, match="batch_size"):
        run(model, x, batch_size=0)
    with pytest.raises(TypeError, match="method"):
        run(model, x, method="exact")
    with pytest.raises(ValueError, match="rank_by"):
        overinterp.Exact(rank_by="p")


def test_classifier_refuses_unnormalised_pixels(model, run):
    clf = overinterp.Classifier(model, preprocessing="cifar10").eval()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(clf, torch.randn(1, 3, 4, 4) * 3)


def test_single_image_without_batch_dim(model, run):
    t = run(model, torch.rand(3, 4, 4))
    assert len(t) == 1 and t.order.shape == (1, 16)


@pytest.mark.parametrize("bad", [[0, 3], [-1, 0], [99, 1]])
def test_labels_outside_the_models_classes_are_refused_before_any_work(model, x, bad):
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(overinterp.errors.UserInputError, match="not a class of the model, which has 3 classes"):
        backselect(model, x, labels=torch.tensor(bad), progress=False)
    assert len(calls) == 1  # only the full-image forward that tells the number of classes


def test_labels_inside_the_classes_are_stored(model, x):
    trace = backselect(model, x, labels=torch.tensor([2, 0]), method=overinterp.KStep(8), progress=False)
    assert trace.labels.tolist() == [2, 0]
    with pytest.raises(TypeError, match="integer class indices"):
        backselect(model, x, labels=torch.tensor([0.5, 1.0]), progress=False)
    with pytest.raises(ValueError, match="labels has 3 entries for 2 images"):
        backselect(model, x, labels=torch.tensor([0, 1, 2]), progress=False)
