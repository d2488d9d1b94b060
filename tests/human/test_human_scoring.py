"""Scoring: Table 2 numbers, the R² fit, results rows shown by render_table, figures, and the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from humankit import CLASSES, build_tiny_study

from overinterp.cli import main
from overinterp.human import db as dbm
from overinterp.human.scoring import (
    ParticipantScore,
    linear_fit,
    participant_scores,
    read_answers,
    result_rows,
    score_study,
    table2,
)
from overinterp.results import read_results, render_table


def _rows(spec: dict[int, dict[float, list[int]]]) -> list[dict]:
    """Answers from {participant: {fraction: [1 = correct, 0 = wrong, …]}}."""
    out = []
    for p, by in spec.items():
        for f, marks in by.items():
            for i, ok in enumerate(marks):
                out.append(
                    {
                        "participant": f"p{p}",
                        "participant_number": p,
                        "fraction": f,
                        "stimulus": f"s{f}-{i}",
                        "label": 3,
                        "choice": 3 if ok else 0,
                    }
                )
    return out


def test_table2_and_fit_by_hand():
    rows = _rows(
        {
            1: {0.05: [1, 0, 0, 0], 0.3: [1, 1, 0, 0], 0.5: [1, 1, 1, 0]},
            2: {0.05: [0, 0, 0, 0], 0.3: [1, 1, 1, 0], 0.5: [1, 1, 1, 1]},
            3: {0.05: [1, 1, 0, 0], 0.3: [1, 0]},
        }
    )  # participant 3 did not finish 30%
    scores = participant_scores(rows, {0.05: 4, 0.3: 4, 0.5: 4})
    assert [(s.number, s.fraction, s.correct, s.answered) for s in scores] == [
        (1, 0.05, 1, 4),
        (1, 0.3, 2, 4),
        (1, 0.5, 3, 4),
        (2, 0.05, 0, 4),
        (2, 0.3, 3, 4),
        (2, 0.5, 4, 4),
        (3, 0.05, 2, 4),
    ]
    t = table2(scores)
    assert [x.fraction for x in t] == [0.05, 0.3, 0.5] and [x.participants for x in t] == [3, 2, 2]
    assert t[0].mean == pytest.approx(0.25) and t[0].std == pytest.approx(0.25)  # sd of .25, 0, .5 (ddof 1)
    assert t[1].mean == pytest.approx(0.625) and t[1].std == pytest.approx(math.sqrt(2) * 0.125)
    assert t[2].mean == pytest.approx(0.875)
    fit = linear_fit(scores)
    x = np.array([100 * s.fraction for s in scores])
    y = np.array([s.accuracy for s in scores])
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - ((y - (intercept + slope * x)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert fit.n == 7 and fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.r2 == pytest.approx(r2) and 0 < fit.r2 < 1
    partial = participant_scores(rows, {0.05: 4, 0.3: 4, 0.5: 4}, complete_only=False)
    assert (3, 0.3, 1, 2) in [(s.number, s.fraction, s.correct, s.answered) for s in partial]


def test_fit_edge_cases():
    same = [ParticipantScore("a", 1, 0.05, 1, 2), ParticipantScore("b", 2, 0.05, 2, 2)]
    assert math.isnan(linear_fit(same).slope) and math.isnan(linear_fit(same).r2)
    flat = [ParticipantScore("a", 1, 0.05, 1, 2), ParticipantScore("a", 1, 0.5, 1, 2)]
    f = linear_fit(flat)
    assert f.slope == pytest.approx(0) and math.isnan(f.r2)
    line = [
        ParticipantScore("a", 1, 0.1, 1, 4),
        ParticipantScore("a", 1, 0.3, 2, 4),
        ParticipantScore("a", 1, 0.5, 3, 4),
    ]
    assert linear_fit(line).r2 == pytest.approx(1.0)


def test_results_rows_render_as_table2(tmp_path):
    scores = participant_scores(_rows({1: {0.05: [1, 0], 0.5: [1, 1]}, 2: {0.05: [0, 0], 0.5: [1, 0]}}))
    manifest = {"study_id": "abc123", "name": "t", "dataset": "cifar10:test"}
    from overinterp.results import append_results

    append_results(tmp_path / "r.csv", result_rows(scores, manifest))
    rows = read_results(tmp_path / "r.csv")
    assert {(r["evaluate_on"], r["seed"], r["value"]) for r in rows} == {
        ("bs5", 1, 0.5),
        ("bs5", 2, 0.0),
        ("bs50", 1, 1.0),
        ("bs50", 2, 0.5),
    }
    table = render_table(rows)
    assert "| human | n/a | bs5 | 25.00 ± 35.36 (n=2) |" in table
    assert "| human | n/a | bs50 | 75.00 ± 35.36 (n=2) |" in table


def test_score_study_and_cli(tmp_path, capsys):
    study = tmp_path / "study"
    m = build_tiny_study(study)
    engine = dbm.make_engine(dbm.default_database_url(study))
    truth = {st["id"]: next(it["label"] for it in m["items"] if it["item"] == st["item"]) for st in m["stimuli"]}
    try:
        for p, correct_from in ((0, 0.0), (1, 0.2)):  # participant 2 misses every 5% image
            pid = dbm.create_participant(engine, m["study_id"]).id
            with dbm.Session(engine) as s:
                order = json.loads(s.get(dbm.Participant, pid).order_json)
            frac = {st["id"]: st["fraction"] for st in m["stimuli"]}
            for pos, sid in enumerate(order):
                ok = frac[sid] >= correct_from and (p == 0 or pos % 2 == 0 or frac[sid] > 0.4)
                dbm.record_answer(engine, pid, sid, truth[sid] if ok else (truth[sid] + 1) % len(CLASSES), pos, 4)
    finally:
        engine.dispose()
    assert main(["human", "export", "--study", str(study), "--out", str(tmp_path / "a.csv")]) == 0
    answers = read_answers(tmp_path / "a.csv")
    assert len(answers) == 2 * len(m["stimuli"])
    assert (
        main(
            [
                "human",
                "score",
                "--study",
                str(study),
                "--answers",
                str(tmp_path / "a.csv"),
                "--out",
                str(tmp_path / "scores"),
                "--results",
                str(tmp_path / "results.csv"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "R² =" in printed and "5% of pixels: 50.0 ± 70.7%" in printed
    report = json.loads((tmp_path / "scores" / "scores.json").read_text())
    t2 = {t["fraction"]: (t["mean"], t["std"]) for t in report["table2"]}
    assert t2[0.05] == pytest.approx((0.5, math.sqrt(0.5)))
    assert t2[0.5] == pytest.approx((1.0, 0.0))
    assert t2[0.3][0] == pytest.approx(0.75)  # participant 2: positions 8–15, even ones right
    for name in ("accuracy_vs_size.png", "sheet_bs5.png", "sheet_bs30.png", "sheet_bs50.png"):
        assert (tmp_path / "scores" / name).stat().st_size > 1000
    rows = read_results(tmp_path / "results.csv")
    assert len(rows) == 6 and {r["model"] for r in rows} == {"human"} and {r["n"] for r in rows} == {8}
    assert {r["dataset"] for r in rows} == {"synthetic:test"} and {r["seed"] for r in rows} == {1, 2}
    assert (
        main(
            [
                "human",
                "score",
                "--study",
                str(study),
                "--out",
                str(tmp_path / "s4"),
                "--no-sheets",
                "--results",
                str(tmp_path / "r2.csv"),
                "--dataset-key",
                "cifar10:test",
            ]
        )
        == 0
    )
    assert "| human | n/a | bs50 | 100.00 ± 0.00 (n=2) |" in render_table(read_results(tmp_path / "r2.csv"))
    # scoring straight from the database gives the same report
    again = score_study(
        study,
        dbm.export_rows(dbm.make_engine(dbm.default_database_url(study)), m["study_id"]),
        tmp_path / "scores2",
        sheets=False,
    )
    assert again["table2"] == report["table2"] and again["fit"]["r2"] == pytest.approx(report["fit"]["r2"])
    assert main(["human", "score", "--study", str(study), "--out", str(tmp_path / "scores3"), "--no-sheets"]) == 0
    with open(tmp_path / "a.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["study", "participant", "participant_number"]


def test_cli_build(tmp_path, capsys):
    """`overinterp human build` from trace files + an npz, mixing three models 35/35/30."""
    import numpy as np
    import torch
    from humankit import make_sources

    sources = make_sources()
    np.savez(tmp_path / "imgs.npz", images=sources[0].images.numpy(), labels=sources[0].labels.numpy())
    args = [
        "human",
        "build",
        "--out",
        str(tmp_path / "s"),
        "--per-class",
        "2",
        "--proportions",
        "0.35,0.35,0.3",
        "--classes",
        ",".join(CLASSES),
        "--seed",
        "1",
    ]
    for s in sources:
        s.trace.save(tmp_path / f"{s.name}.pt")
        args += ["--model", s.name, str(tmp_path / f"{s.name}.pt"), str(tmp_path / "imgs.npz")]
    assert main(args) == 0
    assert "8 images (resnet20 3, resnet18 3, vgg16_bn 2)" in capsys.readouterr().out
    m = json.loads((tmp_path / "s" / "study.json").read_text())
    assert m["classes"] == CLASSES and len(m["stimuli"]) == 24
    assert main(args) == 2  # the folder already holds a study
    assert "already holds a study" in capsys.readouterr().err
    assert torch.equal(sources[0].positions, torch.arange(len(sources[0].images)))


def _answer_all_wrong(study, m) -> None:
    """One participant who answers every stimulus with the wrong class."""
    engine = dbm.make_engine(dbm.default_database_url(study))
    truth = {st["id"]: next(it["label"] for it in m["items"] if it["item"] == st["item"]) for st in m["stimuli"]}
    try:
        pid = dbm.create_participant(engine, m["study_id"]).id
        with dbm.Session(engine) as s:
            order = json.loads(s.get(dbm.Participant, pid).order_json)
        for pos, sid in enumerate(order):
            dbm.record_answer(engine, pid, sid, (truth[sid] + 1) % len(CLASSES), pos, 4)
    finally:
        engine.dispose()


def test_score_takes_labels_from_the_manifest_and_refuses_an_edited_csv(study, tmp_path, capsys):
    folder, m = study
    _answer_all_wrong(folder, m)
    assert main(["human", "export", "--study", str(folder), "--out", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["label"] != r["choice"] for r in rows)
    # "correcting" the labels to the participant's choices would score 100% if the CSV were believed
    with open(tmp_path / "edited.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": r["choice"], "correct": "1"} for r in rows)
    capsys.readouterr()
    argv = ["human", "score", "--study", str(folder), "--no-sheets", "--out"]
    assert main([*argv, str(tmp_path / "s1"), "--answers", str(tmp_path / "edited.csv")]) == 2
    err = capsys.readouterr().err
    assert "manifest" in err and "edited" in err and "Traceback" not in err
    assert not (tmp_path / "s1" / "scores.json").exists()
    # answers without labels are scored against the manifest's labels: the true 0%
    unlabelled = [{**r, "label": None} for r in read_answers(tmp_path / "a.csv")]
    report = score_study(folder, unlabelled, tmp_path / "s2", sheets=False)
    assert all(t["mean"] == 0.0 for t in report["table2"])
    assert main([*argv, str(tmp_path / "s3"), "--answers", str(tmp_path / "a.csv")]) == 0


def test_export_and_score_never_create_a_database(study, tmp_path, capsys):
    folder, _ = study
    typo = tmp_path / "stduy.sqlite"
    url = f"sqlite:///{typo}"
    capsys.readouterr()
    assert main(["human", "export", "--study", str(folder), "--database", url, "--out", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "no database file" in err and str(typo) in err
    argv = ["human", "score", "--study", str(folder), "--database", url, "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "no database file" in capsys.readouterr().err
    assert not typo.exists() and not (tmp_path / "a.csv").exists() and not (tmp_path / "s").exists()
    with pytest.raises(FileNotFoundError, match="no database file"):
        dbm.make_engine(url, create=False)
    assert not typo.exists()


def test_the_spread_drawn_in_figure_s5_stays_inside_0_to_100_percent(tmp_path, monkeypatch):
    """Participants at 100%, 100% and 40% on one size: mean 80%, std 35 points; the bar must not
    reach 115%. Wrong implementation caught: a symmetric ± std bar."""
    import overinterp.analysis.heatmaps as heatmaps
    from overinterp.human.scoring import ParticipantScore, linear_fit, plot_accuracy

    drawn = []
    real = heatmaps.save_figure
    monkeypatch.setattr(heatmaps, "save_figure", lambda fig, *a, **k: (drawn.append(fig), real(fig, *a, **k))[1])
    scores = [ParticipantScore(p, i, 0.05, c, 5) for i, (p, c) in enumerate([("a", 5), ("b", 5), ("c", 2)])]
    scores += [ParticipantScore(p, i, 0.5, 5, 5) for i, p in enumerate("abc")]
    plot_accuracy(scores, linear_fit(scores), tmp_path / "s5")
    ys = [y for ax in drawn[0].axes for coll in ax.collections for seg in coll.get_segments() for _, y in seg]
    assert ys and all(0.0 <= y <= 100.0 for y in ys)
