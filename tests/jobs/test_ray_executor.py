"""The Ray executor on a local 2-CPU cluster that this module starts (and stops):
same shard bytes as the local executor (KStep and Exact), retries after a killed
worker, Ctrl-C, failures, training replicates, no Ray process left after the
driver is SIGKILLed; and the message when Ray is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import ray  # in the test extra: these tests must run, not skip
import torch

from overinterp import Exact, KStep, create_model, save_checkpoint
from overinterp.jobs import JobSpec, ModelSpec, get_executor, job_status, load_job, run_job, run_shard, shard_paths
from overinterp.jobs.shard import file_sha256
from overinterp.training.replicates import replicate_tasks, train_replicates
from overinterp.training.trainer import make_config

NUM_IMAGES, SHARD_SIZE = 10, 2
NUM_SHARDS = NUM_IMAGES // SHARD_SIZE


@pytest.fixture(scope="module")
def cluster():
    from ray import cloudpickle

    # the fault-injecting task functions below live in this test module, which workers cannot import
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=80 * 1024 * 1024,
    )
    try:
        yield
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ray-inputs")
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = save_checkpoint(root / "small.pt", model, "smallcnn")
    rng = np.random.default_rng(0)
    npz = root / "tiny.npz"
    np.savez(
        npz,
        images=rng.integers(0, 256, (NUM_IMAGES, 8, 8, 3), dtype=np.uint8),
        labels=rng.integers(0, 3, NUM_IMAGES),
        train_images=rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8),
        train_labels=rng.integers(0, 3, 48),
    )
    return {"ckpt": str(ckpt), "npz": str(npz)}


def _spec(files: dict[str, str]) -> JobSpec:
    return JobSpec(
        model=ModelSpec(checkpoint=files["ckpt"]),
        dataset=files["npz"],
        positions=tuple(range(NUM_IMAGES)),
        method=KStep(k=8).describe(),
        shard_size=SHARD_SIZE,
        threads=1,
    )


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted((out / "shards").glob("shard-*.pt"))}


def _assert_clean(out: Path, complete: bool) -> None:
    """Only complete shards: every trace has its valid commit record and vice versa, no temporaries."""
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert not [n for n in names if n.startswith(".")], names
    traces = {n[:-3] for n in names if n.endswith(".pt")}
    records = {n[:-5] for n in names if n.endswith(".json")}
    assert traces == records, names
    for stem in traces:
        record = json.loads((out / "shards" / f"{stem}.json").read_text())
        assert record["sha256"] == file_sha256(out / "shards" / f"{stem}.pt")
    if complete:
        assert traces == {f"shard-{s:05d}" for s in range(NUM_SHARDS)}


@pytest.fixture(scope="module")
def local_job(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "job"
    run_job(_spec(files), out, get_executor("local"), progress=False, log=lambda _: None)
    return out


# --------------------------------------------------------------------------- task functions run by workers


def crash_after_trace_once(task):
    """Shard 1's first attempt: write the trace, lose the commit record, die by SIGKILL."""
    result = run_shard(task)
    marker = Path(task.out_dir) / f"killed-{task.shard}.pid"
    if task.shard == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        shard_paths(task.out_dir, task.shard)[1].unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def slow_shard(task):
    for _ in range(15):  # short sleeps: Ray's KeyboardInterrupt lands between them, as between torch calls
        time.sleep(0.1)
    return run_shard(task)


def always_fails(task):
    (Path(task.out_dir) / f"attempt-{task.shard}-{time.monotonic_ns()}").touch()
    raise ValueError(f"shard {task.shard} cannot be computed")


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_ray_writes_the_local_executors_bytes(cluster, files, local_job, tmp_path):
    out = tmp_path / "job"
    executor = get_executor("ray", num_cpus=1, max_retries=1)
    summary = run_job(_spec(files), out, executor, progress=False, log=lambda _: None)
    assert summary["computed"] == NUM_SHARDS and summary["complete"] == NUM_SHARDS
    assert _hashes(out) == _hashes(local_job) and len(_hashes(out)) == NUM_SHARDS
    _assert_clean(out, complete=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["executor"]["name"] == "ray"
    assert manifest["runs"][-1]["executor"]["threads_per_task"] == 1
    records = [json.loads(shard_paths(out, s)[1].read_text()) for s in range(NUM_SHARDS)]
    assert {r["threads"] for r in records} == {1}
    assert {r["pid"] for r in records} != {os.getpid()}  # computed in Ray workers, not here
    # a rerun computes nothing
    again = run_job(_spec(files), out, executor, progress=False, log=lambda _: None)
    assert again["computed"] == 0 and again["skipped"] == NUM_SHARDS
    torch.testing.assert_close(
        load_job(out).trace.logodds, load_job(local_job).trace.logodds, rtol=0, atol=0, equal_nan=True
    )


def test_a_shard_written_twice_is_identical(cluster, files, local_job, tmp_path):
    out = tmp_path / "job"
    run_job(_spec(files), out, get_executor("local"), progress=False, log=lambda _: None)
    shard_paths(out, 3)[1].unlink()  # the job must redo shard 3 (its old trace stays until overwritten)
    summary = run_job(_spec(files), out, get_executor("ray"), progress=False, log=lambda _: None)
    assert summary["computed"] == 1
    assert _hashes(out) == _hashes(local_job)


def test_a_killed_worker_is_retried_and_every_shard_exists_once(cluster, files, local_job, tmp_path):
    out = tmp_path / "job"
    executor = get_executor("ray", num_cpus=1, max_retries=2, task_fn=crash_after_trace_once)
    summary = run_job(_spec(files), out, executor, progress=False, log=lambda _: None)
    killed_pid = int((out / "killed-1.pid").read_text())  # the fault did happen
    assert summary["complete"] == NUM_SHARDS and job_status(out)["missing"] == []
    assert json.loads(shard_paths(out, 1)[1].read_text())["pid"] != killed_pid  # redone by another worker
    _assert_clean(out, complete=True)
    assert _hashes(out) == _hashes(local_job)


def test_a_failure_the_retries_cannot_cure_is_raised(cluster, files, tmp_path):
    out = tmp_path / "job"
    executor = get_executor("ray", max_retries=1, grace=2.0, task_fn=always_fails)
    with pytest.raises(ValueError, match="cannot be computed"):
        run_job(_spec(files), out, executor, progress=False, log=lambda _: None)
    attempts = sorted(p.name for p in out.glob("attempt-*"))
    assert any(a.startswith("attempt-0-") for a in attempts)
    # the shard whose failure is raised ran exactly twice (1 + 1 retry); none ran more often
    assert max(sum(a.startswith(f"attempt-{s}-") for a in attempts) for s in range(NUM_SHARDS)) == 2


def test_ctrl_c_cancels_the_tasks_and_leaves_only_complete_shards(cluster, files, local_job, tmp_path):
    out = tmp_path / "job"
    executor = get_executor("ray", num_cpus=1, grace=5.0, task_fn=slow_shard)
    results = []

    def interrupt(result):
        results.append(result)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run(_tasks(files, out), interrupt)
    first = sorted(p.name for p in (out / "shards").glob("shard-*.pt"))
    time.sleep(2.0)  # cancelled tasks must not finish later
    assert sorted(p.name for p in (out / "shards").glob("shard-*.pt")) == first
    assert len(results) == 1 and 1 <= len(first) < NUM_SHARDS, first
    _assert_clean(out, complete=False)
    run_job(_spec(files), out, get_executor("ray"), progress=False, log=lambda _: None)  # resume
    _assert_clean(out, complete=True)
    assert _hashes(out) == _hashes(local_job)


def _tasks(files, out: Path):
    """The job's shard tasks, as run_job builds them (manifest written by a zero-shard-work local pass)."""
    from overinterp.jobs import ShardTask, job_identity, shard_identity
    from overinterp.jobs.shard import load_job_inputs

    spec = _spec(files)
    identity = job_identity(spec, *load_job_inputs(spec))
    (out / "shards").mkdir(parents=True)
    return [ShardTask(spec.to_dict(), s, str(out), shard_identity(identity, s)) for s in range(spec.num_shards)]


def test_replicates_on_ray_train_the_same_weights_as_locally(cluster, files, tmp_path):
    base = make_config("fast", epochs=1, batch_size=16, preprocessing="none")
    kwargs = dict(train=f"{files['npz']}:train", test=files["npz"], threads=1)
    local = train_replicates(
        replicate_tasks(base, ["smallcnn"], [0, 1], out_dir=tmp_path / "local", **kwargs),
        get_executor("local"),
        progress=False,
        log=lambda _: None,
    )
    remote = train_replicates(
        replicate_tasks(base, ["smallcnn"], [0, 1], out_dir=tmp_path / "ray", **kwargs),
        get_executor("ray", num_cpus=1),
        progress=False,
        log=lambda _: None,
    )
    assert [Path(r["out_dir"]).name for r in remote] == ["smallcnn-seed0", "smallcnn-seed1"]
    assert [r["test_accuracy"] for r in remote] == [r["test_accuracy"] for r in local]
    for name in ("smallcnn-seed0", "smallcnn-seed1"):
        a = torch.load(tmp_path / "local" / name / "model.pt", weights_only=False)["state_dict"]
        b = torch.load(tmp_path / "ray" / name / "model.pt", weights_only=False)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_ray_says_how_to_install(monkeypatch):
    from overinterp.jobs import executors

    monkeypatch.delitem(executors._EXECUTORS, "ray", raising=False)
    monkeypatch.delitem(sys.modules, "overinterp.jobs.ray_executor", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'overinterp\[ray\]'"):
        get_executor("ray")
    assert get_executor("local").name == "local"  # the local executor needs no Ray


def test_cli_backselect_dataset_and_train_on_ray(cluster, files, local_job, tmp_path, capsys):
    from overinterp.cli import main

    out = tmp_path / "job"
    assert (
        main(
            [
                "backselect-dataset",
                "--model",
                files["ckpt"],
                "--dataset",
                files["npz"],
                "--method",
                "kstep",
                "--k",
                "8",
                "--shard-size",
                str(SHARD_SIZE),
                "--threads",
                "1",
                "--out",
                str(out),
                "--executor",
                "ray",
                "--cpus-per-task",
                "1",
                "--max-retries",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")][-1]
    assert json.loads(summary)["complete"] == NUM_SHARDS
    assert _hashes(out) == _hashes(local_job)
    assert (
        main(
            [
                "train",
                "--arch",
                "smallcnn",
                "--recipe",
                "fast",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--preprocessing",
                "none",
                "--data",
                f"{files['npz']}:train",
                "--out",
                str(tmp_path / "runs"),
                "--replicates",
                "2",
                "--threads",
                "1",
                "--executor",
                "ray",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["smallcnn-seed0", "smallcnn-seed1"]


def test_threads_default_to_the_cpus_per_task_and_are_recorded(cluster, files, tmp_path):
    import dataclasses

    torch.set_num_threads(1)  # the driver's count must not be what the manifest records
    out = tmp_path / "job"
    spec = dataclasses.replace(_spec(files), threads=None, positions=tuple(range(4)))
    run_job(spec, out, get_executor("ray", num_cpus=2), progress=False, log=lambda _: None)
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    assert run["threads"] == 2 and run["executor"]["threads_per_task"] == 2
    assert {json.loads(shard_paths(out, s)[1].read_text())["threads"] for s in range(2)} == {2}


@pytest.mark.slow
def test_ray_writes_the_local_executors_bytes_for_the_exact_method(cluster, files, tmp_path):
    """Exact's description holds strings ("logodds") that reach a Ray worker unpickled, not interned: the
    canonical serialisation keeps the shard bytes equal to the local executor's anyway."""
    import dataclasses

    spec = dataclasses.replace(_spec(files), method=Exact().describe(), positions=tuple(range(4)))
    run_job(spec, tmp_path / "local", get_executor("local"), progress=False, log=lambda _: None)
    run_job(spec, tmp_path / "ray", get_executor("ray", num_cpus=1), progress=False, log=lambda _: None)
    assert _hashes(tmp_path / "ray") == _hashes(tmp_path / "local") and len(_hashes(tmp_path / "local")) == 2
    records = [json.loads(shard_paths(tmp_path / "ray", s)[1].read_text()) for s in range(2)]
    assert {r["pid"] for r in records} != {os.getpid()}  # computed in Ray workers


def _proc_stat(pid: int):
    """``(state, ppid, start time)`` of a process, or ``None`` when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0], int(rest[1]), rest[19]


def _ray_descendants(root: int) -> dict[int, bytes]:
    """``{pid: start time}`` of ``root``'s descendants whose command line names Ray."""
    table = {int(d): st for d in os.listdir("/proc") if d.isdigit() and (st := _proc_stat(int(d))) is not None}
    kids: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            if b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out[pid] = table[pid][2]
        except OSError:
            pass
    return out


def _alive(procs: dict[int, bytes]) -> dict[int, bytes]:
    return {
        pid: start
        for pid, start in procs.items()
        if (st := _proc_stat(pid)) is not None and st[2] == start and st[0] != b"Z"
    }


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper and this test read /proc (Linux)")
def test_a_sigkilled_driver_leaves_no_ray_processes(tmp_path):
    """The driver starts its own local cluster; SIGKILL it mid-job: its Ray processes (the dashboard and
    runtime-env agents included, which Ray 2.58 leaves running for good) are gone within seconds."""
    rng = np.random.default_rng(1)
    npz = tmp_path / "slow.npz"
    np.savez(npz, images=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), labels=rng.integers(0, 3, 40))
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "m.pt", create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4), "smallcnn"
    )
    out = tmp_path / "job"
    script = textwrap.dedent(f"""
        from overinterp import Exact
        from overinterp.jobs import JobSpec, ModelSpec, get_executor, run_job
        spec = JobSpec(model=ModelSpec(checkpoint={str(ckpt)!r}), dataset={str(npz)!r}, positions=tuple(range(40)),
                       method=Exact().describe(), shard_size=2, threads=1)
        executor = get_executor("ray", num_cpus=1, init_kwargs=dict(num_cpus=1, object_store_memory=80 * 2**20,
                                                                      configure_logging=False))
        run_job(spec, {str(out)!r}, executor, progress=False, log=lambda _: None)
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen: dict[int, bytes] = {}
    try:
        deadline = time.time() + 180
        while time.time() < deadline and driver.poll() is None and not shard_paths(out, 0)[1].exists():
            seen |= _ray_descendants(driver.pid)
            time.sleep(0.2)
        seen |= _ray_descendants(driver.pid)
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert shard_paths(out, 0)[1].exists(), "no shard within 180 s"
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in _alive(seen)}
        assert any(b"DashboardAgent" in n or b"RuntimeEnvAgent" in n for n in names), names
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _alive(seen):
            time.sleep(0.25)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in _alive(seen)}
        assert not left, f"Ray processes still running 30 s after the driver was killed: {left}"
        assert job_status(out)["complete"] < 20  # killed mid-job; a rerun resumes (tested elsewhere)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _alive(seen):  # never leak what this test started
            os.kill(pid, signal.SIGKILL)
