"""One writer per job folder: a second writer is refused (exit 2, naming the holder), a killed
holder's lock is taken over, and a live writer's temporaries are never removed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import overinterp
from jobkit import make_spec, second_writer, start_paused_writer, temporaries, write_dataset, write_model
from overinterp._atomic import atomic_write
from overinterp._locking import exclusive_lock, read_holder
from overinterp.errors import LockHeldError
from overinterp.jobs import job_status, load_job, run_job, shard_paths
from overinterp.jobs.shard import remove_stale_temporaries

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")


@pytest.fixture()
def job(tmp_path):
    model, data = write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")
    return model, data, make_spec(model, data, method=overinterp.KStep(16))


@pytest.mark.slow
def test_a_second_writer_exits_2_naming_the_holder_and_the_first_finishes(tmp_path):
    """Two real processes on one folder (the first paused mid-write of a shard, the second the command
    line). Guards against: no lock at all (the second job "removed 1 temporary file(s)" — the first's
    live one — and the first died with FileNotFoundError; or both exit 0 having done the work twice);
    a lock that waits instead of refusing (the second would hang until the first goes on); a message
    without the holder's pid and host."""
    r = second_writer(tmp_path)
    assert r.second_exit == 2, r
    lines = r.second_stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.second_stderr, r.second_stderr
    assert f"process {r.holder_pid} on host {socket.gethostname()}" in lines[0], lines[0]
    assert r.live_temporaries_kept and r.second_wrote_nothing, r
    assert r.first_exit == 0 and r.complete, r.first_stderr
    assert r.files_after == ["manifest.json", "shards"]  # the lock file is gone
    assert len(load_job(tmp_path / "job").positions) == 12
    assert temporaries(tmp_path / "job") == []


@pytest.mark.slow
def test_a_sigkilled_holders_lock_is_taken_over(job, tmp_path):
    """SIGKILL the holder mid-write: the next run takes the folder over at once, removes the dead
    writer's temporary and finishes. Guards against a lock that outlives its process (a pid file
    checked only for existence, a lock file whose mere presence blocks)."""
    _, _, spec = job
    out = tmp_path / "job"
    holder, _ = start_paused_writer(spec, out, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    assert (out / "job.lock").exists() and read_holder(out / "job.lock")["pid"] == holder.pid  # stale record
    assert len(temporaries(out)) == 1
    said: list[str] = []
    summary = run_job(spec, out, progress=False, log=said.append)
    assert summary["complete"] == 3 and summary["computed"] == 3
    assert any("removed 1 temporary" in s for s in said), said
    assert temporaries(out) == [] and not (out / "job.lock").exists()


def test_the_library_raises_lock_held_error_and_writes_nothing(job, tmp_path):
    """In one process: a folder whose lock is held is refused before any file is written."""
    _, _, spec = job
    out = tmp_path / "job"
    out.mkdir()
    with exclusive_lock(out / "job.lock", what="a test"):
        with pytest.raises(LockHeldError, match=f"process {os.getpid()} on host") as info:
            run_job(spec, out, progress=False, log=lambda _: None)
        assert info.value.holder["pid"] == os.getpid()
        assert sorted(p.name for p in out.iterdir()) == ["job.lock"]
    assert list(out.iterdir()) == []
    run_job(spec, out, progress=False, log=lambda _: None)  # free again
    assert job_status(out)["missing"] == []


def test_a_refused_run_into_a_new_folder_leaves_no_folder(job, tmp_path):
    """Inputs are checked before the folder (and its lock file) is made. Guards against taking the
    lock first and leaving an empty folder, or a lock file, behind a refused run."""
    model, data, spec = job
    out = tmp_path / "new"
    bad = spec.__class__(**{**spec.__dict__, "positions": (0, 50)})
    with pytest.raises(ValueError, match="positions reach"):
        run_job(bad, out, progress=False)
    assert not out.exists()


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    """The stale-temporary cleanup keeps a temporary someone is still writing (a worker of a killed
    driver) and removes it once that write is gone. Guards against removing by name alone."""
    out = tmp_path / "job"
    pt = shard_paths(out, 0)[0]
    pt.parent.mkdir(parents=True)
    dead = pt.parent / ".shard-00001.pt.deadbeef.tmp"
    dead.write_bytes(b"left by a killed write")
    with atomic_write(pt, "wb") as fh:
        fh.write(b"half")
        fh.flush()
        (live,) = [p for p in pt.parent.iterdir() if p.name.startswith(".shard-00000.pt.")]
        assert remove_stale_temporaries(out) == [dead]
        assert live.exists()
        fh.write(b" and the rest")
    assert pt.read_bytes() == b"half and the rest"  # the write survived the cleanup
    probe = pt.parent / ".shard-00002.json.abcdefgh.tmp"
    code = textwrap.dedent(f"""
        import os, fcntl, time
        fd = os.open({str(probe)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "locked"
        assert remove_stale_temporaries(out) == [] and probe.exists()  # another live process writes it
    finally:
        other.kill()
        other.wait()
    assert remove_stale_temporaries(out) == [probe] and not probe.exists()
