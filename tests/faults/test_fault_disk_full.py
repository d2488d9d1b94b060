"""A full disk (issue 26, items 6-7): one error line naming the file that could not be
written and saying that finished work is kept; the earlier file is unchanged, and a job's
finished shards are kept and not redone on the rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faults.badinputs import BACKSELECT, SENTINEL, make_world
from faults.diskfull import disk_full_for
from overinterp.cli import main


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    return make_world(tmp_path)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and sum("error:" in ln for ln in lines) == 1, err
    assert "error:" in lines[-1], err
    return lines[-1]


def test_disk_full_writing_a_trace(world, capsys):
    """Guards against: three chained tracebacks ending in ``OSError: [Errno 28]`` (the attack),
    or a half-written trace over the earlier one."""
    argv = [a.format(w=world) for a in BACKSELECT + ["--images", "{w}/good.npz", "--limit", "2"]]
    capsys.readouterr()
    with disk_full_for("trace.pt") as refused:
        assert main(argv) == 2
    assert refused
    line = _one_error_line(capsys.readouterr().err)
    assert f"could not write {world / 'trace.pt'}: No space left on device" in line and "kept" in line
    assert (world / "trace.pt").read_bytes() == SENTINEL
    assert not list(world.glob(".trace.pt*"))


def test_disk_full_in_a_job_keeps_the_finished_shards(world, capsys):
    """Guards against: a job that loses (or redoes) its finished shards when one shard cannot be written."""
    out = world / "job"
    argv = ["backselect-dataset", "--model", str(world / "small.pt"), "--dataset", str(world / "good.npz")]
    argv += ["--method", "exact", "--limit", "6", "--shard-size", "2", "--out", str(out), "--no-progress"]
    capsys.readouterr()
    with disk_full_for("shard-00001.pt"):
        assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "shard-00001.pt: No space left on device" in line and "finished before it are kept" in line
    kept = (out / "shards" / "shard-00000.pt").read_bytes()
    assert main(argv) == 0  # room again: the rerun finishes the job
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "shards" / "shard-00000.pt").read_bytes() == kept
    assert sorted(p.name for p in (out / "shards").glob("*.pt")) == [f"shard-0000{i}.pt" for i in range(3)]
    assert (summary["skipped"], summary["computed"], summary["complete"]) == (1, 2, 3)
