"""Pixel-subset experiments on tiny jobs, checked against direct computations."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import overinterp
from jobkit import make_spec, write_dataset, write_model
from overinterp.experiments import (
    compare_rankings,
    confidence_drop,
    evaluate_subsets,
    make_subsets,
    retrain_on_subsets,
    transfer,
)
from overinterp.experiments.pixel_subsets import ensemble_row
from overinterp.jobs import load_job, run_job
from overinterp.models import Ensemble
from overinterp.results import model_fingerprint, read_results


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    d = tmp_path_factory.mktemp("px")
    m1, m2 = write_model(d / "m1.pt", seed=0), write_model(d / "m2.pt", seed=1)
    data = write_dataset(d / "d.npz", n=12, size=8)
    train = write_dataset(d / "train.npz", n=24, size=8, seed=3, prefix="train")
    out = {}
    for name, model, extra in [("a", m1, {}), ("b", m2, {}), ("p", m1, {"rank_by": "probability"})]:
        run_job(make_spec(model, data, method=overinterp.Exact(**extra)), d / name, progress=False)
        out[name] = d / name
    run_job(make_spec(m1, train, n=24, prefix="train", shard_size=12), d / "train", progress=False)
    out["train"] = d / "train"
    out["dir"] = d
    return out


def test_confidence_drop_by_hand():
    full = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    sub = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.6, 0.4]], dtype=torch.float64)
    r = confidence_drop(full, sub)
    drops = torch.tensor([0.4, 0.5, 0.0], dtype=torch.float64)
    assert r["mean"] == pytest.approx(0.3) and r["std"] == pytest.approx(float(drops.std())) and r["n"] == 3


def test_evaluate_subsets_matches_direct_forward(jobs, tmp_path):
    res_path = tmp_path / "results.csv"
    out = evaluate_subsets(jobs["a"], kinds=("full", "bs", "random", "mask"), results=res_path, dataset_key="toy:test")
    job = load_job(jobs["a"])
    model, images = job.load_model(), job.load_images()
    for kind, label in (("bs", "bs5"), ("random", "random5"), ("mask", "mask5")):
        sub = make_subsets(job, kind, 0.05)
        # 5% of 64 pixels → ceil(3.2) = 4 kept
        assert sub.kept_counts().tolist() == [4] * 12
        with torch.no_grad():
            probs = F.softmax(model(sub.pixels()).double(), 1)
            full = F.softmax(model(images.float() / 255).double(), 1)
        assert out[label]["accuracy"] == pytest.approx(float((probs.argmax(1) == job.labels).double().mean()))
        assert out[label]["confidence_drop"]["mean"] == pytest.approx(confidence_drop(full, probs)["mean"])
    assert out["full"]["accuracy"] == pytest.approx(float((full.argmax(1) == job.labels).double().mean()))
    # BS subsets are the trace's last-removed pixels
    assert torch.equal(make_subsets(job, "bs").keep, job.trace.keep_mask(0.05))
    rows = read_results(res_path)
    got = {(r["evaluate_on"], r["metric"]) for r in rows}
    assert ("bs5", "confidence_drop_mean") in got and ("random5", "accuracy") in got and ("full", "accuracy") in got
    assert {r["dataset"] for r in rows} == {"toy:test"}


def test_subset_errors(jobs):
    job = load_job(jobs["a"])
    with pytest.raises(ValueError, match="fraction"):
        make_subsets(job, "bs", 0.0)
    with pytest.raises(ValueError, match="fraction"):
        make_subsets(job, "bs", 1.2)
    with pytest.raises(ValueError, match="covers 12 images"):
        make_subsets(job, "bs", 0.05, images=job.load_images()[:5])
    with pytest.raises(ValueError, match="kind"):
        make_subsets(job, "nope")


def test_transfer_pairs(jobs, tmp_path):
    ja, jb = load_job(jobs["a"]), load_job(jobs["b"])
    tau = float(torch.sigmoid(ja.trace.full_logodds.double()).median())  # about half the images have an SIS
    recs = transfer([jobs["a"], jobs["b"]], threshold=tau, results=tmp_path / "r.csv")
    assert len(recs) == 4
    mb = jb.load_model()
    sub = make_subsets(ja, "bs")
    with torch.no_grad():
        acc = float((mb(sub.pixels()).argmax(1) == ja.labels).double().mean())
    ab = [r for r in recs if r["from_job"] == str(ja.out_dir) and r["to_job"] == str(jb.out_dir)][0]
    assert ab["subset_accuracy"] == pytest.approx(acc)
    aa = [r for r in recs if r["from_job"] == r["to_job"] == str(ja.out_dir)][0]
    assert aa["n_sis"] >= 5 and aa["sis_transfer"] == 1.0  # A's verified SIS suffice for A by construction
    assert 0.0 <= ab["sis_transfer"] <= 1.0
    assert len(read_results(tmp_path / "r.csv")) == 8
    # both models are "smallcnn": the rows name the jobs' folders so that pairs stay apart
    assert {(r["from"], r["to"]) for r in recs} == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}
    assert {r["model"] for r in read_results(tmp_path / "r.csv")} == {"a", "b"}
    named = transfer([jobs["a"], jobs["b"]], threshold=tau, names=["m1", "m2"])
    assert named[1]["from"] == "m1" and named[1]["to"] == "m2"
    with pytest.raises(ValueError, match="names"):
        transfer([jobs["a"], jobs["b"]], names=["x"])


def test_compare_rankings(jobs, tmp_path):
    same = compare_rankings(jobs["a"], jobs["a"])
    assert same["overlap_mean"] == 1.0 and same["jaccard_mean"] == 1.0
    r = compare_rankings(jobs["a"], jobs["p"], out_dir=tmp_path)
    assert r["rank_by_b"] == "probability" and 0.0 <= r["overlap_mean"] <= 1.0
    ka, kb = load_job(jobs["a"]).trace.keep_mask(0.05), load_job(jobs["p"]).trace.keep_mask(0.05)
    expected = float(((ka & kb).flatten(1).sum(1).double() / 4).mean())
    assert r["overlap_mean"] == pytest.approx(expected)
    assert (tmp_path / "ranking_heatmaps.png").stat().st_size > 0
    assert json.loads((tmp_path / "ranking_comparison.json").read_text())["n"] == 12
    assert make_subsets(load_job(jobs["p"]), "bs").label == "bs5-prob"


def test_compare_on_shared_images_only(jobs, tmp_path):
    """An exact anchor on a few images against a job over more images: only shared positions count."""
    d = jobs["dir"]
    run_job(make_spec(d / "m1.pt", d / "d.npz", n=5, method=overinterp.KStep(8)), tmp_path / "few", progress=False)
    r = compare_rankings(tmp_path / "few", jobs["a"])
    assert r["n"] == 5
    ka = load_job(tmp_path / "few").trace.keep_mask(0.05)
    kb = load_job(jobs["a"]).trace.keep_mask(0.05)[:5]
    assert r["overlap_mean"] == pytest.approx(float(((ka & kb).flatten(1).sum(1).double() / 4).mean()))


def test_retrain_on_subsets_tiny(jobs, tmp_path):
    out = retrain_on_subsets(
        jobs["train"],
        [jobs["a"], jobs["b"]],
        kind="random",
        dataset_keys=["toy:a", None],
        arch="smallcnn",
        seeds=(0, 1),
        recipe="fast",
        overrides={"epochs": 1, "batch_size": 8, "arch_kwargs": {"width": 4}},
        augment=True,
        out_dir=tmp_path / "runs",
        results=tmp_path / "r.csv",
        progress=False,
    )
    assert [r["seed"] for r in out] == [0, 1]
    assert all((tmp_path / "runs" / f"smallcnn-random5-aug-seed{s}" / "model.pt").is_file() for s in (0, 1))
    rows = read_results(tmp_path / "r.csv")
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert {r["train_on"] for r in acc} == {"random5+aug"} and len(acc) == 4
    assert {r["dataset"] for r in acc} == {"toy:a", str(jobs["dir"] / "d.npz") + ":test"}
    assert {r["experiment"] for r in acc} == {"table-s1"}
    # the recorded accuracy is the saved model's on the test subsets
    model = overinterp.load_model(None, checkpoint=tmp_path / "runs" / "smallcnn-random5-aug-seed0" / "model.pt")
    test = make_subsets(load_job(jobs["a"]), "random")
    with torch.no_grad():
        acc0 = float((model(test.pixels()).argmax(1) == test.labels).double().mean())
    assert out[0]["accuracy"] == pytest.approx(acc0)


def test_random_subsets_differ_between_splits_and_not_between_models(jobs):
    a, b = load_job(jobs["a"]), load_job(jobs["b"])  # two models' jobs over the same 12 images
    test_a = make_subsets(a, "random")
    assert test_a.meta["seed"] == 5678 and test_a.meta["split"] == "test"
    train_a = make_subsets(a, "random", split="train")
    assert train_a.meta["seed"] == 1234
    # the same positions, other split: other masks (before, test image i had training image i's mask)
    assert all(not torch.equal(train_a.keep[i], test_a.keep[i]) for i in range(len(test_a)))
    # within a split: the same masks for every model and every call
    assert torch.equal(test_a.keep, make_subsets(b, "random").keep)
    assert torch.equal(train_a.keep, make_subsets(b, "random", split="train").keep)
    assert torch.equal(make_subsets(a, "random", seed=9).keep, make_subsets(b, "random", seed=9, split="train").keep)


def test_retrain_records_split_seeds_and_the_paper_augmentation(jobs, tmp_path):
    """augment="once": the training subsets are cropped/flipped once (fixed), no per-epoch augmentation."""
    common = dict(
        kind="random",
        arch="smallcnn",
        seeds=(0,),
        recipe="fast",
        overrides={"epochs": 1, "batch_size": 8, "arch_kwargs": {"width": 4}},
        dataset_keys="toy:a",
        out_dir=tmp_path / "runs",
        results=tmp_path / "r.csv",
        progress=False,
    )
    once = retrain_on_subsets(jobs["train"], jobs["a"], augment="once", **common)
    run = tmp_path / "runs" / "smallcnn-random5-aug-once-seed0"
    assert once[0]["run_dir"] == str(run) and once[0]["train_on"] == "random5+aug-once"
    assert json.loads((run / "config.json").read_text())["config"]["augment"] is False
    rows = [r for r in read_results(tmp_path / "r.csv") if r["metric"] == "accuracy"]
    assert [(r["train_on"], r["experiment"]) for r in rows] == [("random5+aug-once", "table-s1")]
    assert "augment=once" in rows[0]["notes"] and "seeded 1234 (train) / 5678 (test)" in rows[0]["notes"]
    with pytest.raises(ValueError, match="augment must be"):
        retrain_on_subsets(jobs["train"], jobs["a"], augment="twice", **common)


def test_ensemble_row_is_full_image_models_on_full_and_random_subsets(jobs, tmp_path):
    """Table 1's ensemble row as in the paper: members trained on full images, two evaluations."""
    from overinterp.training.trainer import make_config, train_classifier

    train = load_job(jobs["train"])
    pixels = train.load_images()
    paths = []
    for seed in (0, 1):
        cfg = make_config("fast", arch="smallcnn", arch_kwargs={"width": 4}, epochs=1, batch_size=8, seed=seed)
        paths.append(
            train_classifier(cfg, (pixels, train.labels), None, tmp_path / f"full{seed}", progress=False).checkpoint
        )
    res = tmp_path / "r.csv"
    out = ensemble_row(paths, [jobs["a"]], dataset_keys="toy:test", results=res, checkpoint=tmp_path / "e.json")
    members = [overinterp.load_model(None, checkpoint=p) for p in paths]
    ens = Ensemble(members).eval()
    job = load_job(jobs["a"])
    with torch.no_grad():
        full = ens(job.load_images().float() / 255)
        rand = ens(make_subsets(job, "random").pixels())  # test subsets, seed 5678
    assert out["toy:test"]["full"]["accuracy"] == pytest.approx(float((full.argmax(1) == job.labels).double().mean()))
    assert out["toy:test"]["random5"]["accuracy"] == pytest.approx(
        float((rand.argmax(1) == job.labels).double().mean())
    )
    rows = read_results(res)
    acc = {r["evaluate_on"]: r for r in rows if r["metric"] == "accuracy"}
    assert set(acc) == {"full", "random5"}
    for r in acc.values():
        assert (r["experiment"], r["train_on"], r["dataset"], r["model"]) == (
            "table1",
            "full",
            "toy:test",
            "ensemble:smallcnnx2",
        )
        # the row's model is the ensemble of exactly these full-image members, not the job's model
        assert r["fingerprint"] == model_fingerprint(ens) != model_fingerprint(job.load_model())
        assert all(str(p) in r["notes"] for p in paths) and "trained on full images" in r["notes"]
        assert r["checkpoint"] == str(tmp_path / "e.json")
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_row([], [jobs["a"]])


def test_cli_subset_options(jobs, tmp_path):
    from overinterp.cli import build_parser, main

    base = ["subsets", "train", "--train-job", "t", "--test-job", "j", "--out", str(tmp_path)]
    parse = build_parser().parse_args
    assert parse(base).augment == "none" and parse(base + ["--augment"]).augment == "joint"
    assert parse(base + ["--augment", "once"]).augment == "once"
    got = parse(base + ["--train-subset-seed", "1", "--test-subset-seed", "2"])
    assert (got.train_subset_seed, got.test_subset_seed) == (1, 2)
    res = tmp_path / "r.csv"
    assert main(["subsets", "evaluate", "--job", str(jobs["a"]), "--kinds", "full,random", "--results", str(res)]) == 0
    assert all("random masks seeded 5678" in r["notes"] for r in read_results(res))
