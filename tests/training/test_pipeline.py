"""The pipeline check (accuracy clearly above chance, predictions not collapsed or skewed)
and the one shared validation step of model + data + labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from overinterp.data.base import LabeledImages
from overinterp.data.synthetic import make_shortcut_dataset
from overinterp.errors import UserInputError
from overinterp.models.spec import parse_model_spec
from overinterp.training.evaluation import evaluate_accuracy
from overinterp.training.pipeline import (
    PipelineError,
    PipelineWarning,
    check_pipeline,
    open_inputs,
    validate_inputs,
    validate_pipeline,
)

FIXTURE = Path(__file__).parents[1] / "models" / "fixtures" / "tiny_cnn_255_nhwc_float.tflite"


@pytest.fixture(scope="module")
def shortcut():
    data = make_shortcut_dataset(64, size=16, num_classes=4, seed=1)
    return (data.images * 255).round() / 255, data.labels


class OneClass(nn.Module):
    """Predicts class 2 of 10 for every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 10)
        out[:, 2] = 5.0
        return out + 0 * x.mean()


def _logits(pred: torch.Tensor, k: int) -> torch.Tensor:
    return nn.functional.one_hot(pred, k).float() * 4.0


def test_the_0_255_tflite_fixture_fed_unit_pixels_is_refused_naming_the_range_option(shortcut):
    """Wrong implementations caught: a test of accuracy against 1/K alone (the mis-declared
    fixture is 41% right on 4 classes, p = 0.004, and would pass); a message without the fix."""
    images, labels = shortcut
    pytest.importorskip("ai_edge_litert")
    bad = parse_model_spec(str(FIXTURE)).load()
    with pytest.raises(PipelineError, match=r"range=0:255") as err:
        validate_pipeline(bad, images, labels, where="shortcut")
    text = str(err.value)
    assert "\n" not in text and "preprocessing=imagenet" in text and "layout=" in text and "force=True" in text
    good = parse_model_spec(f"{FIXTURE}?range=0:255").load()
    check = validate_pipeline(good, images, labels)
    assert check.ok and check.accuracy > 0.9
    with pytest.warns(PipelineWarning, match="range=0:255"):
        assert not validate_pipeline(bad, images, labels, force=True).ok


def test_a_model_predicting_one_class_is_refused_with_and_without_labels():
    """Wrong implementation caught: a collapse check that needs labels, or one that skips
    unlabelled data."""
    x = torch.rand(40, 3, 8, 8)
    y = torch.arange(40) % 10
    with pytest.raises(PipelineError, match="not clearly above chance"):
        validate_pipeline(OneClass().eval(), x, y)
    with pytest.raises(PipelineError, match="collapse onto one class: 100% of 40 images are predicted class 2"):
        validate_pipeline(OneClass().eval(), x, None)


def test_chance_accuracy_is_refused_but_small_samples_and_good_models_pass():
    """Wrong implementations caught: a two-sided test or a test on too few images to tell
    (2 images of 2 classes: even a perfect model has p = 0.25, so it is not refused)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 10
    random_pred = torch.randint(0, 10, (300,), generator=g)
    c = check_pipeline(_logits(random_pred, 10), y)
    assert not c.ok and "not clearly above chance" in str(c.problem) and c.p_value > 0.01
    right = y.clone()
    right[:60] = (right[:60] + 1) % 10  # 80% right, errors spread: fine
    assert check_pipeline(_logits(right, 10), y).ok
    assert check_pipeline(_logits(torch.tensor([1, 1]), 2), torch.tensor([0, 0])).ok  # too few to tell
    worst = check_pipeline(_logits(torch.tensor([1] * 7), 2), torch.tensor([0] * 7))
    assert not worst.ok  # 7 images of 2 classes, all wrong: 0.5^7 < 0.01, testable and refused


def test_skewed_predictions_are_refused_only_with_enough_labelled_images():
    """A 60%-right model whose errors all go to one class (the signature of a missing
    normalisation) is refused; the same on 10 images is not judged."""
    y = torch.arange(100) % 10
    pred = y.clone()
    pred[y >= 6] = 3  # 40% of the images predicted 3 (it is 10% of the labels)
    c = check_pipeline(_logits(pred, 10), y)
    assert not c.ok and "skewed" in str(c.problem) and "class 3" in str(c.problem)
    assert "skewed" not in str(check_pipeline(_logits(pred[:10], 10), y[:10]).problem)


def test_evaluate_warns_on_a_broken_pipeline_but_returns_the_numbers():
    x = torch.rand(40, 3, 8, 8)
    y = torch.arange(40) % 10
    with pytest.warns(PipelineWarning, match="not clearly above chance"):
        res = evaluate_accuracy(OneClass().eval(), x, y, check=True)
    assert res["accuracy"] == pytest.approx(0.1)


def test_the_shared_validation_step_refuses_bad_labels_images_and_shapes():
    model = OneClass().eval()
    data = LabeledImages(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 12, 3]), None, "d", "mem")
    with pytest.raises(UserInputError, match="label 12"):
        validate_inputs(model, data, where="d")
    assert validate_inputs(model, data, positions=[0, 1, 3]) == 10  # only the selected labels are checked
    nan = torch.zeros(2, 3, 8, 8)
    nan[1, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="image 1 of 2"):
        validate_inputs(model, nan)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3)).eval()
    conv(torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserInputError, match="cannot classify 3×8×8"):
        validate_inputs(conv, torch.zeros(2, 3, 8, 8))
    opened = open_inputs(model, data.subset([0, 1, 3]))
    assert opened.num_classes == 10 and opened.labelled and opened.model is model
