"""The long-format results file, model fingerprints and the Table 1 renderer."""

from __future__ import annotations

import csv
import threading

import pytest
import torch

from overinterp.models import create_model
from overinterp.results import (
    RESULT_COLUMNS,
    RESULTS_SCHEMA_VERSION,
    append_results,
    make_row,
    model_fingerprint,
    read_results,
    render_table,
    summarize,
)


def rows_for(model, seed, values, train_on="full"):
    return [
        dict(
            model=model,
            dataset=d,
            metric="accuracy",
            value=v,
            seed=seed,
            n=10,
            train_on=train_on,
            fingerprint=f"{model}-{seed}",
        )
        for d, v in values.items()
    ]


def test_make_row_validates():
    row = make_row(model="resnet20", dataset="cifar10:test", metric="accuracy", value=0.9, seed=3, n=10000)
    assert list(row) == list(RESULT_COLUMNS) and row["schema_version"] == str(RESULTS_SCHEMA_VERSION)
    assert row["train_on"] == row["evaluate_on"] == "full" and row["recorded_at"].endswith("Z")
    with pytest.raises(ValueError, match="unknown result columns"):
        make_row(model="m", dataset="d", metric="accuracy", value=1, acc=2)
    with pytest.raises(ValueError, match="needs dataset"):
        make_row(model="m", metric="accuracy", value=1)
    with pytest.raises(ValueError, match="number"):
        make_row(model="m", dataset="d", metric="accuracy", value="high")


def test_append_and_read_back(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    assert append_results(path, rows_for("resnet20", 0, {"cifar10:test": 0.9})) == 1
    append_results(path, rows_for("resnet20", 1, {"cifar10:test": 0.8, "cifar10.1:v6": 0.7}))
    text = path.read_text()
    assert text.count("schema_version") == 1  # one header
    rows = read_results(path)
    assert [r["value"] for r in rows] == [0.9, 0.8, 0.7]
    assert rows[1]["seed"] == 1 and rows[1]["n"] == 10 and rows[1]["dataset"] == "cifar10:test"
    assert not list(tmp_path.joinpath("sub").glob(".*.tmp"))


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "results.csv"

    def writer(k):
        for i in range(5):
            append_results(path, rows_for(f"m{k}", i, {"cifar10:test": 0.5}))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = read_results(path)
    assert not path.with_name("results.csv.lock").exists()  # removed by the last writer
    assert len(rows) == 20 and {(r["model"], r["seed"]) for r in rows} == {
        (f"m{k}", i) for k in range(4) for i in range(5)
    }


def test_refuses_foreign_or_newer_files(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an overinterp results file"):
        append_results(other, rows_for("m", 0, {"d": 1.0}))
    # a refused append leaves no lock file beside the user's file (it used to leave other.csv.lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.csv"]
    with pytest.raises(ValueError, match="not an overinterp results file"):
        read_results(other)
    path = tmp_path / "r.csv"
    append_results(path, rows_for("m", 0, {"d": 1.0}))
    with open(path, "a", newline="") as f:
        row = make_row(model="m", dataset="d", metric="accuracy", value=1)
        row["schema_version"] = str(RESULTS_SCHEMA_VERSION + 1)
        csv.DictWriter(f, RESULT_COLUMNS, lineterminator="\n").writerow(row)
    with pytest.raises(ValueError, match="schema"):
        read_results(path)
    with pytest.raises(ValueError, match="newer"):
        append_results(path, rows_for("m", 1, {"d": 1.0}))


def test_summary_and_table1_layout(tmp_path):
    rows = []
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        rows += rows_for(
            "ResNet20",
            seed,
            {"cifar10:test": acc, "cifar10.1:v6": acc - 0.1, "cifar10c:all": acc - 0.2, "cifar10c:fog/5": 0.1},
        )
    rows += rows_for("ResNet20", 0, {"cifar10:test": 0.5}, train_on="bs5")
    rows += rows_for("ResNet20", 2, {"cifar10:test": 0.95})  # a re-evaluation: the last row counts
    path = tmp_path / "results.csv"
    append_results(path, rows)
    stored = read_results(path)
    summary = {(s["model"], s["train_on"], s["dataset"]): s for s in summarize(stored)}
    s = summary[("ResNet20", "full", "cifar10:test")]
    assert s["replicates"] == 3 and s["mean"] == pytest.approx((0.90 + 0.92 + 0.95) / 3)
    assert s["std"] == pytest.approx(torch.tensor([0.90, 0.92, 0.95], dtype=torch.float64).std().item())
    md = render_table(stored)
    lines = md.splitlines()
    assert lines[0] == "| Model | Train on | Evaluate on | CIFAR-10 test (%) | CIFAR-10.1 (%) | CIFAR-10-C (%) |"
    assert lines[2].startswith("| ResNet20 | Full images | Full images | 92.33 ± 2.52 (n=3) | 82.00 ± 2.00 (n=3) |")
    assert lines[3] == "| ResNet20 | bs5 | Full images | 50.00 | — | — |"
    assert "fog" not in md  # per-corruption blocks are not Table 1 columns
    table = list(csv.DictReader(render_table(stored, "csv").splitlines()))
    assert table[0]["model"] == "ResNet20" and float(table[0]["cifar10.1:v6 mean"]) == pytest.approx(0.82)
    assert table[0]["cifar10c:all replicates"] == "3" and table[1]["cifar10.1:v6 mean"] == ""


def test_fingerprint_tracks_weights_and_preprocessing():
    torch.manual_seed(0)
    a = create_model("smallcnn", width=4, preprocessing="cifar10")
    b = create_model("smallcnn", width=4, preprocessing="cifar10")
    b.load_state_dict(a.state_dict())
    fa = model_fingerprint(a)
    assert fa == model_fingerprint(b) and len(fa) == 16
    b.network.features[1].num_batches_tracked += 5  # does not change outputs
    assert model_fingerprint(b) == fa
    with torch.no_grad():
        b.network.linear.bias[0] += 1e-3
    assert model_fingerprint(b) != fa
    c = create_model("smallcnn", width=4, preprocessing="imagenet")
    c.network.load_state_dict(a.network.state_dict())
    assert model_fingerprint(c) != fa


def test_table_filters_experiments(tmp_path):
    rows = [dict(r, experiment="table1") for r in rows_for("R", 0, {"cifar10:test": 0.7}, train_on="bs5")]
    rows += [dict(r, experiment="table-s1") for r in rows_for("R", 0, {"cifar10:test": 0.8}, train_on="bs5+aug")]
    append_results(tmp_path / "r.csv", rows)
    stored = read_results(tmp_path / "r.csv")
    only = render_table(stored, experiments=["table1"])
    assert "70.00" in only and "80.00" not in only
    both = render_table(stored)
    assert "| R | bs5 | Full images | 70.00 |" in both and "| R | bs5+aug | Full images | 80.00 |" in both
