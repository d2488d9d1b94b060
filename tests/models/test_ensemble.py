"""Ensembles: mean of logits, one baseline, JSON files, and use as any other model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import overinterp
from overinterp.cli import main
from overinterp.models import Ensemble, create_model, load_ensemble, load_model, save_checkpoint, save_ensemble
from overinterp.results import model_fingerprint, read_results


def members(k=3, preprocessing="cifar10", size_seed=0):
    out = []
    for i in range(k):
        torch.manual_seed(size_seed + i)
        out.append(create_model("smallcnn", num_classes=4, preprocessing=preprocessing, width=4))
    return out


def test_mean_of_logits_and_classifier_contract():
    ms = members()
    ens = Ensemble(ms, name="three")
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in ms]).mean(0)
        assert torch.allclose(ens(x), expected, atol=1e-6)
    assert isinstance(ens, overinterp.Classifier) and len(ens) == 3 and ens.num_classes == 4
    assert all(not m.training for m in ens.modules())
    assert torch.allclose(ens.baseline, torch.tensor([0.4914, 0.4822, 0.4465]))


def test_mixed_baselines_refused_unless_chosen():
    ms = members(2) + members(1, preprocessing="imagenet")
    with pytest.raises(ValueError, match="different baselines in pixel space.*pass baseline="):
        Ensemble(ms)
    ens = Ensemble(ms, baseline=0.0)  # each member keeps its own normalisation inside
    assert float(ens.baseline) == 0.0
    with pytest.raises(TypeError, match="not an overinterp Classifier"):
        Ensemble([torch.nn.Linear(2, 2)])
    odd = create_model("smallcnn", num_classes=5, preprocessing="cifar10", width=4)
    with pytest.raises(ValueError, match="numbers of classes"):
        Ensemble(members(1) + [odd])


def test_backselect_masks_in_pixel_space_with_the_common_baseline():
    ms = members(2)
    ens = Ensemble(ms)
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    trace = overinterp.backselect(ens, images, progress=False)
    assert trace.order.shape == (2, 16)
    solo = overinterp.backselect(Ensemble(ms[:1]), images, progress=False)
    ref = overinterp.backselect(ms[0], images, progress=False)  # a one-member ensemble = the member
    assert torch.equal(solo.order, ref.order)


def test_json_round_trip_relative_paths_and_errors(tmp_path):
    ms = members(2)
    (tmp_path / "ckpt").mkdir()
    paths = [save_checkpoint(tmp_path / "ckpt" / f"m{i}.pt", m, "smallcnn") for i, m in enumerate(ms)]
    # a third-party member: plain state dict + its architecture and normalisation
    torch.manual_seed(9)
    third = create_model("smallcnn", num_classes=4, preprocessing="cifar10", width=4)
    torch.save(
        {"state_dict": {"module." + k: v for k, v in third.network.state_dict().items()}},
        tmp_path / "ckpt" / "third.th",
    )
    spec = save_ensemble(
        tmp_path / "ens" / "e.json",
        [
            *paths,
            {
                "checkpoint": str(tmp_path / "ckpt" / "third.th"),
                "arch": "smallcnn",
                "preprocessing": "cifar10",
                "arch_kwargs": {"width": 4},
            },
        ],
        name="e3",
    )
    stored = json.loads(spec.read_text())
    assert stored["members"][0] == "../ckpt/m0.pt" and stored["format"] == "overinterp-ensemble"
    ens = load_ensemble(spec)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(ens(x), Ensemble([*ms, third])(x), atol=1e-6)
    assert ens.name == "e3" and isinstance(load_model(spec), Ensemble)
    assert model_fingerprint(ens) == model_fingerprint(Ensemble([*ms, third]))
    assert model_fingerprint(ens) != model_fingerprint(Ensemble(ms))
    (tmp_path / "ckpt" / "m1.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"member 1 checkpoint not found: .*m1\.pt"):
        load_ensemble(spec)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": ["x.pt"]}))
    with pytest.raises(ValueError, match="not an overinterp ensemble file"):
        load_ensemble(bad)
    with pytest.raises(ValueError, match="ensemble file"):
        load_model(spec, checkpoint="x.pt")


def test_cli_ensemble_evaluate_and_table(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    paths = [str(save_checkpoint(tmp_path / "ckpt" / f"m{i}.pt", m, "smallcnn")) for i, m in enumerate(members(2))]
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "test.npz",
        test_images=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
        test_labels=rng.integers(0, 4, 6),
    )
    assert main(["ensemble", "--out", str(tmp_path / "e.json"), *paths]) == 0
    assert "2 members" in capsys.readouterr().out
    results = tmp_path / "results.csv"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "e.json"),
                "--dataset",
                str(tmp_path / "test.npz"),
                "--results",
                str(results),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                paths[0],
                "--dataset",
                str(tmp_path / "test.npz"),
                "--seed",
                "4",
                "--results",
                str(results),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = read_results(results)
    assert {r["arch"] for r in rows} == {"ensemble", "smallcnn"} and {r["metric"] for r in rows} == {"accuracy", "loss"}
    assert all(r["dataset"] == "file:test.npz" and r["n"] == 6 for r in rows)
    capsys.readouterr()
    assert main(["table", str(results), "--dataset", "file:test.npz"]) == 0
    out = capsys.readouterr().out
    assert "| e | Full images | Full images |" in out and "| smallcnn |" in out
    # mixed baselines: the file is not left behind
    mixed = save_checkpoint(tmp_path / "ckpt" / "in.pt", members(1, "imagenet")[0], "smallcnn")
    assert main(["ensemble", "--out", str(tmp_path / "mixed.json"), paths[0], str(mixed)]) == 2
    assert not (tmp_path / "mixed.json").exists()
