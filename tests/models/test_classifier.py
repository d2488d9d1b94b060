"""Classifier: preprocessing, baseline, eval-mode checks, and feature maps."""

import pytest
import torch
from torch import nn

from overinterp import Classifier, Normalize, patch_features
from overinterp.models.classifier import check_eval_mode, resolve_baseline
from overinterp.sis.features import resolve_features


def test_classifier_normalises_and_defaults_baseline_to_mean():
    net = nn.Flatten()
    clf = Classifier(net, preprocessing="cifar10").eval()
    mean = torch.tensor([0.4914, 0.4822, 0.4465])
    assert torch.allclose(clf.baseline, mean)
    x = mean.view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(clf(x), torch.zeros(1, 12), atol=1e-6)  # the baseline is 0 after normalisation
    assert clf.preprocessing_config()["type"] == "normalize"


def test_classifier_without_preprocessing_and_explicit_baseline():
    clf = Classifier(nn.Flatten(), baseline=0.5)
    assert clf.baseline.item() == 0.5 and clf.preprocessing is None
    assert Classifier(nn.Flatten()).baseline.item() == 0.0
    with pytest.raises(ValueError, match="unknown preprocessing"):
        Classifier(nn.Flatten(), preprocessing="imagenett")
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.5], [0.0])


def test_resolve_baseline_shapes():
    dev = torch.device("cpu")
    assert resolve_baseline(None, nn.Identity(), (3, 2, 2), torch.float64, dev).abs().sum() == 0
    b = resolve_baseline([1.0, 2.0, 3.0], nn.Identity(), (3, 2, 2), torch.float32, dev)
    assert b.shape == (3, 2, 2) and b[2, 1, 1] == 3.0
    full = torch.rand(3, 2, 2)
    assert torch.equal(resolve_baseline(full, nn.Identity(), (3, 2, 2), torch.float32, dev), full)


def test_eval_mode_check_names_module():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
    check_eval_mode(m)
    m[1].train()
    with pytest.raises(ValueError, match="1"):
        check_eval_mode(m)


def test_patch_features_layout():
    g = patch_features(5, 4, 2)
    assert g.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3], [4, 4, 5, 5]]
    fm = resolve_features(g, 3, 5, 4, torch.device("cpu"))
    assert fm.num_features.tolist() == [6, 6, 6] and not fm.is_pixels
    px = resolve_features(None, 2, 3, 3, torch.device("cpu"))
    assert px.is_pixels and px.groups[1, 2, 1].item() == 7
