"""The dataset job: equal to direct backselect, resumable byte-for-byte, refuses mixing
(other manifests, and foreign shards: by their commit record and their payload)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
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
    ForeignShardError,
    JobMismatchError,
    ShardTask,
    get_executor,
    job_identity,
    job_status,
    load_job,
    run_job,
    run_shard,
    select_positions,
    shard_identity,
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
    assert ident["model_fingerprint"] == overinterp.results.model_fingerprint(model)
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
    with pytest.raises(JobMismatchError, match=r"method \{.*\"k\": 4.*, this job's method is \{.*\"k\": 8"):
        run_job(make_spec(model_path, data_path, method=overinterp.KStep(8)), out, progress=False)
    other = write_model(tmp_path / "other.pt", seed=1)
    with pytest.raises(JobMismatchError, match="this job's model is"):
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
        run_job(
            make_spec(model_path, data_path, n=12, shard_size=4).__class__(
                **{**make_spec(model_path, data_path).__dict__, "positions": (0, 50)}
            ),
            tmp_path / "j",
            progress=False,
        )
    with pytest.raises(ValueError, match="float16"):
        make_spec(model_path, data_path, dtype="float16")
    with pytest.raises(ValueError, match="unknown executor"):
        get_executor("nope")
    with pytest.raises(FileNotFoundError, match="backselect-dataset"):
        load_job(tmp_path / "nothing")


@pytest.mark.slow
def test_sigkill_and_rerun_gives_identical_shards(inputs, tmp_path):
    """Kill the CLI with SIGKILL after its first shard, rerun: shards byte-equal an uninterrupted run."""
    model_path, data_path = inputs
    big = write_dataset(tmp_path / "big.npz", n=16, size=10, seed=5)
    cmd = [
        sys.executable,
        "-m",
        "overinterp",
        "backselect-dataset",
        "--model",
        str(model_path),
        "--dataset",
        f"{big}:test",
        "--method",
        "exact",
        "--shard-size",
        "2",
        "--threads",
        "1",
        "--batch-size",
        "7",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(cmd + ["--out", str(ref)], check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    assert not [p.name for p in (killed / "shards").iterdir() if p.name.startswith(".")]  # no temporaries


def test_float64_job_twice_in_one_process(inputs, tmp_path):
    """Running in float64 must not change the cached model (and so its fingerprint)."""
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, n=4, method=overinterp.KStep(8), dtype="float64")
    assert run_job(spec, tmp_path / "j64", progress=False)["computed"] == 1
    assert run_job(spec, tmp_path / "j64", progress=False)["skipped"] == 1
    out = load_job(tmp_path / "j64")
    assert out.trace.meta["dtype"] == "float64"
    direct = overinterp.backselect(
        out.load_model().double(), out.load_images().double() / 255, method=overinterp.KStep(8), progress=False
    )
    assert torch.equal(out.trace.order, direct.order)


def test_rerun_with_tuple_extra_and_other_display_name(inputs, tmp_path):
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, n=4, method=overinterp.KStep(8), identity_extra={"a": (1, 2)})
    run_job(spec, tmp_path / "j", progress=False)
    assert run_job(spec, tmp_path / "j", progress=False)["skipped"] == 1
    rec = json.loads(shard_paths(tmp_path / "j", 0)[1].read_text())
    assert rec["threads"] == 1 and "batch_size" in rec and rec["dataset"].endswith("d.npz:test")


# --------------------------------------------------------------------------- foreign shards


def _fingerprint(model_path: Path) -> str:
    return overinterp.results.model_fingerprint(overinterp.jobs.ModelSpec(checkpoint=str(model_path)).load())


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


@pytest.fixture()
def two_jobs(inputs, tmp_path):
    """The same images and method, two models: finished jobs ``a`` and ``b``."""
    model_a, data_path = inputs
    model_b = write_model(tmp_path / "b.pt", seed=1)
    method = overinterp.KStep(16)
    run_job(make_spec(model_a, data_path, method=method), tmp_path / "a", progress=False, log=lambda _: None)
    run_job(make_spec(model_b, data_path, method=method), tmp_path / "b", progress=False, log=lambda _: None)
    return model_a, model_b, data_path, method


def test_copied_job_without_manifest_is_refused_for_another_model(two_jobs, tmp_path, capsys):
    """(a) copy a finished job, delete manifest.json, rerun with another model: nothing adopted or overwritten."""
    model_a, model_b, data_path, method = two_jobs
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "a", copy)
    (copy / "manifest.json").unlink()
    before = _files(copy)
    fa, fb = _fingerprint(model_a), _fingerprint(model_b)
    with pytest.raises(ForeignShardError) as exc:
        run_job(make_spec(model_b, data_path, method=method), copy, progress=False, log=lambda _: None)
    msg = str(exc.value)
    assert f"shard 0 was written for model {fa}, this job's model is {fb}" in msg
    assert "3 shards" in msg and "run this job into another folder" in msg and "move their .pt and .json files" in msg
    assert isinstance(exc.value, JobMismatchError) and isinstance(exc.value, ValueError)
    assert _files(copy) == before and not (copy / "manifest.json").exists()  # nothing written
    # through the command line: exit code 2 and the message
    from overinterp.cli import main

    code = main(
        [
            "backselect-dataset",
            "--model",
            str(model_b),
            "--dataset",
            f"{data_path}:test",
            "--method",
            "kstep",
            "--k",
            "16",
            "--shard-size",
            "4",
            "--threads",
            "1",
            "--out",
            str(copy),
            "--no-progress",
        ]
    )
    assert code == 2 and "this job's model is" in capsys.readouterr().err
    assert _files(copy) == before
    # the same model adopts its own shards (the manifest is rebuilt)
    assert (
        run_job(make_spec(model_a, data_path, method=method), copy, progress=False, log=lambda _: None)["computed"] == 0
    )


def test_a_shard_copied_from_another_models_job_is_refused(two_jobs, tmp_path):
    """(b) one shard + its record from a job of another model in a finished job: not complete, never overwritten."""
    model_a, model_b, data_path, method = two_jobs
    a, b = tmp_path / "a", tmp_path / "b"
    for path in shard_paths(b, 1):
        shutil.copy(path, a / "shards" / path.name)
    before = _files(a)
    expected = f"shard 1 was written for model {_fingerprint(model_b)}, this job's model is {_fingerprint(model_a)}"
    with pytest.raises(ForeignShardError, match=expected):
        job_status(a)
    with pytest.raises(ForeignShardError, match=expected):
        load_job(a)
    with pytest.raises(ForeignShardError, match=expected):
        load_job(a, allow_partial=True)
    with pytest.raises(ForeignShardError, match=expected):
        run_job(make_spec(model_a, data_path, method=method), a, progress=False, log=lambda _: None)
    assert _files(a) == before
    # the worker refuses too (a shard that appeared after the driver checked)
    from overinterp.jobs.job import _read_manifest

    ident = _read_manifest(a)["identity"]
    task = ShardTask(make_spec(model_a, data_path, method=method).to_dict(), 1, str(a), shard_identity(ident, 1))
    with pytest.raises(ForeignShardError, match=expected):
        run_shard(task)
    assert _files(a) == before
    # moving it away (as the message says) lets the job recompute it
    for path in shard_paths(a, 1):
        path.unlink()
    assert run_job(make_spec(model_a, data_path, method=method), a, progress=False, log=lambda _: None)["computed"] == 1


def test_a_payload_swapped_under_a_valid_record_is_refused(two_jobs, tmp_path):
    """The payload's own identity is checked, not only the record's: b's trace with a's record (hash fixed up)."""
    model_a, model_b, data_path, method = two_jobs
    a, b = tmp_path / "a", tmp_path / "b"
    pt, rec = shard_paths(a, 2)
    shutil.copy(shard_paths(b, 2)[0], pt)
    record = json.loads(rec.read_text())
    record["sha256"] = file_sha256(pt)
    rec.write_text(json.dumps(record))
    with pytest.raises(ForeignShardError, match=r"shard 2 was written for model .*\(payload\)"):
        job_status(a)
    # a trace of another job without a valid record (e.g. copied alone) is not overwritten either
    rec.unlink()
    with pytest.raises(ForeignShardError, match="no valid commit record"):
        run_job(make_spec(model_a, data_path, method=method), a, progress=False, log=lambda _: None)
    assert pt.read_bytes() == shard_paths(b, 2)[0].read_bytes()


@pytest.mark.parametrize("change", ["method", "positions", "patch"])
def test_shards_of_another_method_or_positions_are_refused(inputs, tmp_path, change):
    """(c) a copied job without manifest, rerun with another method / other positions / features."""
    model_path, data_path = inputs
    run_job(
        make_spec(model_path, data_path, method=overinterp.KStep(16)),
        tmp_path / "a",
        progress=False,
        log=lambda _: None,
    )
    (tmp_path / "a" / "manifest.json").unlink()
    before = _files(tmp_path / "a")
    other = {
        "method": dict(method=overinterp.KStep(8)),
        "positions": dict(method=overinterp.KStep(16), n=12),
        "patch": dict(method=overinterp.KStep(4), patch=2),
    }[change]
    spec = make_spec(model_path, data_path, **other)
    if change == "positions":
        spec = spec.__class__(**{**spec.__dict__, "positions": tuple(reversed(range(12)))})
    if change == "method":
        spec_match = "this job's method is"
    elif change == "positions":
        spec_match = "this job's positions is"
    else:
        spec_match = "this job's features is"
    with pytest.raises(ForeignShardError, match=spec_match):
        run_job(spec, tmp_path / "a", progress=False, log=lambda _: None)
    assert _files(tmp_path / "a") == before


def _make_legacy(out: Path, shard: int) -> None:
    """Rewrite a shard as the code before identities wrote it: no identity in the record nor in the meta."""
    pt, rec = shard_paths(out, shard)
    d = torch.load(pt, weights_only=True)
    del d["meta"]["job_identity"]
    d.pop("content_sha256", None)  # nor a content seal
    torch.save(d, pt)
    record = json.loads(rec.read_text())
    del record["identity"]
    record["sha256"] = file_sha256(pt)
    rec.write_text(json.dumps(record))


def test_legacy_shards_are_read_and_checked_on_what_they_hold(two_jobs, tmp_path):
    model_a, model_b, data_path, method = two_jobs
    a, b = tmp_path / "a", tmp_path / "b"
    for s in range(3):
        _make_legacy(a, s)
        _make_legacy(b, s)
    with pytest.warns(UserWarning, match="without a content hash"):  # legacy shards: readable, said so
        assert job_status(a)["missing"] == [] and load_job(a).trace.order.shape[0] == 12
    assert run_job(make_spec(model_a, data_path, method=method), a, progress=False, log=lambda _: None)["computed"] == 0
    for path in shard_paths(b, 0):
        shutil.copy(path, a / "shards" / path.name)
    with pytest.raises(ForeignShardError, match=f"shard 0 was written for model {_fingerprint(model_b)}"):
        load_job(a)


def test_stale_temporaries_of_the_jobs_own_naming_are_removed(inputs, tmp_path):
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, method=overinterp.KStep(16))
    out = tmp_path / "job"
    run_job(spec, out, progress=False, log=lambda _: None)
    shards = out / "shards"
    stale = [
        shards / ".shard-00001.pt.ab3_x9yz.tmp",
        shards / ".shard-00002.json.q1w2e3r4.tmp",
        out / ".manifest.json.zzzz0000.tmp",
    ]
    kept = [
        shards / ".other.pt.ab3_x9yz.tmp",
        shards / "notes.tmp",
        shards / ".shard-00001.pt.tmp",
        out / ".results.csv.abcdefgh.tmp",
        shards / "README",
    ]
    for p in stale + kept:
        p.write_bytes(b"left by a killed write")
    said = []
    assert run_job(spec, out, progress=False, log=said.append)["computed"] == 0
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert any("removed 3 temporary" in line for line in said)
    assert job_status(out)["missing"] == []


def test_shard_bytes_do_not_depend_on_object_identity(inputs, tmp_path):
    """A Ray worker gets the spec unpickled (its strings are not the interned literals a local
    run shares); the canonical serialisation makes the exact method's shard bytes equal anyway."""
    model_path, data_path = inputs
    spec = make_spec(model_path, data_path, n=4, method=overinterp.Exact())
    from overinterp.jobs.shard import load_job_inputs

    ident = job_identity(spec, *load_job_inputs(spec))
    hashes = []
    for i, d in enumerate([spec.to_dict(), pickle.loads(pickle.dumps(spec.to_dict()))]):
        out = tmp_path / f"o{i}"
        (out / "shards").mkdir(parents=True)
        run_shard(ShardTask(d, 0, str(out), shard_identity(ident, 0)))
        hashes.append(file_sha256(shard_paths(out, 0)[0]))
    assert hashes[0] == hashes[1]
