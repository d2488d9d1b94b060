"""The judge of the shared bad-input table (used by tests/cli/test_bad_inputs.py and
bench/faults.py): each way a refusal can be unclear is caught."""

from __future__ import annotations

from faults.badinputs import CASES, SENTINEL, judge, make_world, snapshot, try_case

LINE = "overinterp evaluate: error: --threads: must be an integer >= 1\n"


def test_judge_flags_every_unclear_refusal(tmp_path):
    (tmp_path / "out.csv").write_bytes(SENTINEL)
    before = snapshot(tmp_path)
    assert judge(2, LINE, "--threads", before, before, tmp_path) == []
    assert judge(1, LINE, "--threads", before, before, tmp_path) == ["exit code 1, not 2"]
    assert "a traceback" in judge(
        2, "Traceback (most recent call last):\n" + LINE, "--threads", before, before, tmp_path
    )
    assert judge(2, LINE + LINE, "--threads", before, before, tmp_path)[0].startswith("2 error lines")
    assert judge(2, LINE + "more\n", "--threads", before, before, tmp_path)[0].startswith("1 error lines, or not last")
    assert "lacks" in judge(2, LINE, "--batch-size", before, before, tmp_path)[0]
    (tmp_path / "out.csv").write_bytes(b"overwritten")
    assert judge(2, LINE, "--threads", before, snapshot(tmp_path), tmp_path) == [
        "files written or overwritten: ['out.csv']"
    ]


def test_try_case_runs_the_cli_in_process(tmp_path):
    world = make_world(tmp_path)
    assert try_case(world, CASES["--threads 0"]) == []
    wrong = CASES["--threads 0"].__class__(CASES["--threads 0"].argv, "a message it does not print")
    assert "lacks" in try_case(world, wrong)[0]
    assert (world / "results.csv").read_bytes() == SENTINEL
