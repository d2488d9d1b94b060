"""The backselect-dataset, job-status and subsets commands, end to end on tiny data."""

from __future__ import annotations

import json

from jobkit import write_dataset, write_model
from overinterp.cli import main
from overinterp.data.specs import canonical_spec
from overinterp.jobs import load_job
from overinterp.results import read_results


def test_aliases(tmp_path):
    assert canonical_spec("cifar10-train") == "cifar10:train"
    assert canonical_spec("cifar10c-sample") == "cifar10c:sample"
    assert canonical_spec(f"folder:{tmp_path}") == f"folder@{tmp_path}"
    assert canonical_spec("folder:test@x.zip") == "folder:test@x.zip"


def test_cli_chain(tmp_path, capsys):
    model = write_model(tmp_path / "m.pt")
    data = write_dataset(tmp_path / "d.npz", n=10)
    job = tmp_path / "job"
    base = [
        "backselect-dataset",
        "--model",
        str(model),
        "--dataset",
        f"{data}:test",
        "--method",
        "kstep",
        "--k",
        "8",
        "--shard-size",
        "4",
        "--threads",
        "1",
        "--out",
        str(job),
        "--no-progress",
    ]
    assert main(base) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["shards"] == 3 and summary["computed"] == 3
    assert main(["job-status", str(job)]) == 0
    assert "3/3 shards complete" in capsys.readouterr().out
    assert len(load_job(job).trace) == 10
    # other settings into the same folder: refused with the differences named, exit 2
    assert main(base + ["--patch", "2"]) == 2
    assert "refusing to mix" in capsys.readouterr().err
    res = tmp_path / "r.csv"
    assert (
        main(
            [
                "subsets",
                "evaluate",
                "--job",
                str(job),
                "--kinds",
                "full,bs,random",
                "--results",
                str(res),
                "--dataset-key",
                "toy:test",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "bs5" in out and "random5" in out and "confidence drop" in out
    assert {r["evaluate_on"] for r in read_results(res)} == {"full", "bs5", "random5"}
    assert main(["subsets", "evaluate", "--job", str(job), "--fraction", "1.5"]) == 2
    assert "fraction" in capsys.readouterr().err
    assert (
        main(
            [
                "subsets",
                "train",
                "--train-job",
                str(job),
                "--test-job",
                f"{job}=toy:x",
                "--test-job",
                str(job),
                "--kind",
                "random",
                "--arch",
                "smallcnn",
                "--recipe",
                "fast",
                "--epochs",
                "1",
                "--seeds",
                "0",
                "--out",
                str(tmp_path / "models"),
                "--results",
                str(res),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "mean ± std over 1 seeds" in capsys.readouterr().out
    trained = [r for r in read_results(res) if r["train_on"] == "random5" and r["metric"] == "accuracy"]
    assert sorted(r["dataset"] for r in trained) == sorted(["toy:x", f"{data}:test"])
    assert main(["subsets", "compare", str(job), str(job), "--out", str(tmp_path / "cmp")]) == 0
    assert json.loads(capsys.readouterr().out)["overlap_mean"] == 1.0


def test_cli_missing_job(tmp_path, capsys):
    assert main(["subsets", "evaluate", "--job", str(tmp_path / "none")]) == 2
    assert "backselect-dataset" in capsys.readouterr().err
