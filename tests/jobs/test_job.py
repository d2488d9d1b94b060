"""The dataset job: equal to direct backselect, resumable byte-for-byte, refuses mixing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import overinterp
from jobkit import make_spec, write_dataset, write_model
from overinterp.jobs import (
    JobMismatchError,
    get_executor,
    job_status,
    load_job,
    run_job,
    select_positions,
    shard_paths,
)
from overinterp.jobs.shard import file_sha256


@pytest.fixture()
def inputs(tmp_path):
    return write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted((out / "shards").glob("*.pt"))}


def test_job_equals_direct_backselect(inputs, tmp_path):
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, method=overinterp.Exact())
    summary = run_job(spec, tmp_path / "job", progress=False)
    assert summary["computed"] == 3 and summary["complete"] == 3
    out = load_job(tmp_path / "job")
    model = out.load_model()
    images = out.load_images()
    direct = overinterp.backselect(model, images.float() / 255, method=overinterp.Exact(), progress=False)
    assert torch.equal(out.trace.order, direct.order)
    assert torch.equal(out.trace.logodds, direct.logodds)
    assert torch.equal(out.positions, torch.arange(12))
    from overinterp.data import open_dataset

    assert torch.equal(out.labels, open_dataset(f"{data_path}:test").labels)
    m = json.loads((tmp_path / "job" / "manifest.json").read_text())
    ident = m["identity"]
    assert ident["model_fingerprint"] == overinterp.model_fingerprint(model)
    assert ident["spec"]["method"]["name"] == "exact" and m["runs"][0]["threads"] == 1
    assert ident["features"] == {"type": "pixels", "patch": 1} and ident["num_shards"] == 3


def test_rerun_skips_and_recomputes_missing_identically(inputs, tmp_path):
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, method=overinterp.KStep(4))
    run_job(spec, tmp_path / "job", progress=False)
    before = _hashes(tmp_path / "job")
    again = run_job(spec, tmp_path / "job", progress=False)
    assert again["computed"] == 0 and again["skipped"] == 3
    pt, rec = shard_paths(tmp_path / "job", 1)
    pt.unlink()
    assert job_status(tmp_path / "job")["missing"] == [1]
    third = run_job(spec, tmp_path / "job", progress=False)
    assert third["computed"] == 1
    assert _hashes(tmp_path / "job") == before
    # a corrupted shard (hash no longer matches its record) is recomputed, not trusted
    pt.write_bytes(b"garbage")
    assert job_status(tmp_path / "job")["missing"] == [1]
    with pytest.raises(ValueError, match="missing"):
        load_job(tmp_path / "job")
    run_job(spec, tmp_path / "job", progress=False)
    assert _hashes(tmp_path / "job") == before


def test_other_settings_or_model_are_refused(inputs, tmp_path):
    model_path, data_path = inputs
    out = tmp_path / "job"
    run_job(make_spec(model_path, data_path, method=overinterp.KStep(4)), out, progress=False)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(JobMismatchError, match="method"):
        run_job(make_spec(model_path, data_path, method=overinterp.KStep(8)), out, progress=False)
    other = write_model(tmp_path / "other.pt", seed=1)
    with pytest.raises(JobMismatchError, match="model_fingerprint"):
        run_job(make_spec(other, data_path, method=overinterp.KStep(4)), out, progress=False)
    with pytest.raises(JobMismatchError, match="positions"):
        run_job(make_spec(model_path, data_path, n=8, method=overinterp.KStep(4)), out, progress=False)
    assert (out / "manifest.json").read_bytes() == manifest  # nothing overwritten


def test_select_positions_and_bad_input(inputs, tmp_path):
    assert select_positions(10, offset=2, limit=3) == [2, 3, 4]
    s = select_positions(100, sample=5, seed=3)
    assert s == sorted(s) and len(set(s)) == 5 and s == select_positions(100, sample=5, seed=3)
    with pytest.raises(ValueError):
        select_positions(10, offset=10)
    with pytest.raises(ValueError):
        select_positions(10, sample=11)
    model_path, data_path = inputs
    with pytest.raises(ValueError, match="positions reach"):
        run_job(make_spec(model_path, data_path, n=12, shard_size=4).__class__(
            **{**make_spec(model_path, data_path).__dict__, "positions": (0, 50)}), tmp_path / "j", progress=False)
    with pytest.raises(ValueError, match="float16"):
        make_spec(model_path, data_path, dtype="float16")
    with pytest.raises(ValueError, match="unknown executor"):
        get_executor("nope")
    with pytest.raises(FileNotFoundError, match="backselect-dataset"):
        load_job(tmp_path / "nothing")


def test_sigkill_and_rerun_gives_identical_shards(inputs, tmp_path):
    """Kill the CLI with SIGKILL after its first shard, rerun: shards byte-equal an uninterrupted run."""
    model_path, data_path = inputs
    big = write_dataset(tmp_path / "big.npz", n=16, size=10, seed=5)
    cmd = [sys.executable, "-m", "overinterp", "backselect-dataset", "--model", str(model_path),
           "--dataset", f"{big}:test", "--method", "exact", "--shard-size", "2", "--threads", "1",
           "--batch-size", "7", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(cmd + ["--out", str(ref)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not shard_paths(killed, 0)[1].exists():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = job_status(killed)
    assert 1 <= st["complete"] < st["shards"], st  # killed mid-job
    subprocess.run(cmd + ["--out", str(killed)], check=True, env=env, capture_output=True)
    assert _hashes(killed) == _hashes(ref) and len(_hashes(ref)) == 8
    assert job_status(killed)["missing"] == []


def test_float64_job_twice_in_one_process(inputs, tmp_path):
    """Running in float64 must not change the cached model (and so its fingerprint)."""
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, n=4, method=overinterp.KStep(8), dtype="float64")
    assert run_job(spec, tmp_path / "j64", progress=False)["computed"] == 1
    assert run_job(spec, tmp_path / "j64", progress=False)["skipped"] == 1
    out = load_job(tmp_path / "j64")
    assert out.trace.meta["dtype"] == "float64"
    direct = overinterp.backselect(out.load_model().double(), out.load_images().double() / 255,
                                   method=overinterp.KStep(8), progress=False)
    assert torch.equal(out.trace.order, direct.order)


def test_rerun_with_tuple_extra_and_other_display_name(inputs, tmp_path):
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, n=4, method=overinterp.KStep(8), identity_extra={"a": (1, 2)})
    run_job(spec, tmp_path / "j", progress=False)
    assert run_job(spec, tmp_path / "j", progress=False)["skipped"] == 1
    rec = json.loads(shard_paths(tmp_path / "j", 0)[1].read_text())
    assert rec["threads"] == 1 and "batch_size" in rec and rec["dataset"].endswith("d.npz:test")
