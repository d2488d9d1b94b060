"""Input dropout in the training loop: what the network sees, seeding, resume, refusals, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from overinterp.cli import main
from overinterp.models import registry
from overinterp.training import trainer
from overinterp.training.trainer import TrainConfig, make_config, train_classifier


class RecordingNet(nn.Module):
    """A linear classifier that keeps every training-mode input batch it sees."""

    seen: list[Tensor] = []

    def __init__(self, num_classes: int = 3, size: int = 16) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            RecordingNet.seen.append(x.detach().clone().contiguous())
        return self.linear(x.flatten(1))


@pytest.fixture
def recorder(monkeypatch):
    entry = registry.ModelEntry("recorder", lambda num_classes=3, **kw: RecordingNet(num_classes, **kw), "test")
    monkeypatch.setitem(registry._REGISTRY, "recorder", entry)
    RecordingNet.seen = []
    yield RecordingNet.seen
    RecordingNet.seen = []


def _data(n: int = 64, size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def _config(**kw) -> TrainConfig:
    base = dict(arch="recorder", epochs=1, batch_size=16, schedule="constant", milestones=(), augment=False, lr=0.01)
    base.update(kw)
    return make_config("paper", **base)


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_dropped_pixels_are_the_baseline_at_the_rate(recorder):
    """With CIFAR-10 normalisation the baseline (the mean pixel) is exactly 0 where the network looks;
    a uint8 pixel never normalises to 0, so zeros are exactly the dropped pixels."""
    x, y = _data()
    rate = 0.25
    train_classifier(_config(input_dropout=rate, preprocessing="cifar10"), (x, y), progress=False, amp=False)
    seen = torch.cat(recorder)
    assert seen.shape == (64, 3, 16, 16)
    zero = seen == 0
    # whole pixels (all channels together) are dropped, nothing else is zero
    assert bool((zero.all(1) | ~zero.any(1)).all())
    dropped = zero.all(1)
    n = dropped.numel()
    assert abs(int(dropped.sum()) - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate))
    # independent masks per image
    assert not torch.equal(dropped[0], dropped[1])


def test_rate_zero_is_the_plain_run_bit_for_bit_and_the_seed_decides_the_masks(recorder):
    x, y = _data()
    plain = train_classifier(_config(), (x, y), progress=False)
    plain_seen = torch.cat(recorder)
    recorder.clear()
    zero = train_classifier(_config(input_dropout=0.0), (x, y), progress=False)
    assert torch.equal(torch.cat(recorder), plain_seen)
    assert all(torch.equal(a, b) for a, b in zip(_weights(plain.model).values(), _weights(zero.model).values()))

    def masks(seed: int) -> Tensor:
        recorder.clear()
        train_classifier(_config(input_dropout=0.5, seed=seed), (x, y), progress=False)
        return torch.cat(recorder) == 0

    a, b, c = masks(0), masks(0), masks(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resume_restores_the_dropout_generator(tmp_path, recorder):
    """Two epochs straight = one epoch, then resumed to two: the masks of epoch 2 come from the saved state."""
    x, y = _data()
    straight = train_classifier(_config(input_dropout=0.5, epochs=2), (x, y), None, tmp_path / "a", progress=False)
    train_classifier(_config(input_dropout=0.5, epochs=1), (x, y), None, tmp_path / "b", progress=False)
    resumed = train_classifier(
        _config(input_dropout=0.5, epochs=2), (x, y), None, tmp_path / "b", force=True, progress=False
    )
    assert resumed.resumed_from == 1
    for k, v in _weights(straight.model).items():
        assert torch.equal(v, _weights(resumed.model)[k]), k
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["config"]
    assert cfg["input_dropout"] == 0.5
    # a checkpoint written before the setting existed resumes as input_dropout = 0
    old = {k: v for k, v in _config().to_dict().items() if k != "input_dropout"}
    assert trainer._hyperparameter_changes(old, _config().to_dict()) == []
    assert trainer._hyperparameter_changes(old, _config(input_dropout=0.1).to_dict()) == ["input_dropout: 0.0 → 0.1"]


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2, float("nan"), True, "0.5"])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match=r"input_dropout must be a number in \[0, 1\)"):
        TrainConfig(input_dropout=rate)


def test_cli_input_dropout(tmp_path, capsys):
    x, y = _data(24, 8)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=x.permute(0, 2, 3, 1).numpy(), labels=y.numpy().astype(np.uint8))
    common = ["train", "--arch", "smallcnn", "--data", str(npz), "--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "r"), "--input-dropout", "0.3", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["input_dropout"] == 0.3
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "bad"), "--input-dropout", "1"]) == 2
    assert "--input-dropout: must be in [0, 1)" in capsys.readouterr().err
