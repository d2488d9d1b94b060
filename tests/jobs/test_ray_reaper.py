"""A Ray driver SIGKILLed at any moment — during Ray's start-up included — leaves no Ray process
behind (the reaper, :mod:`overinterp.jobs._reaper`); the reaper runs as a plain script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobkit import kill_ray_driver_after
from overinterp.jobs import _reaper

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper and this test read /proc (Linux)")


@pytest.mark.slow
def test_a_driver_killed_during_ray_start_up_leaves_no_ray_process():
    """SIGKILL the driver 0.5, 2 and 6 s after it starts Ray (its ``ray.init`` takes seconds here):
    no process it started survives 20 s (the reaper needs about one). Guards against a reaper that
    only knows the driver's descendants from its last look (agents spawned after it, then orphaned
    by the raylet's death, ran on for 30+ s), and one started after ``ray.init``."""
    runs = [kill_ray_driver_after(d) for d in (0.5, 2.0, 6.0)]
    assert all(not r["left"] for r in runs), runs
    assert any(r["in_start_up"] and r["ray_processes_at_kill"] for r in runs), runs  # start-up really was hit
    assert max(r["seconds_to_clean"] for r in runs) < 20, runs  # type: ignore[type-var]


#: a driver whose ``ray.init`` starts an "agent" that is orphaned at once (as the raylet's agents are
#: when a killed driver's raylet dies) and then hangs: killed there, the driver is mid start-up
ORPHANING_DRIVER = """
import os, subprocess, sys, time
import overinterp.jobs.ray_executor as rx

def init(*a, **k):
    agent = f"import time; time.sleep(60)  # ray::RuntimeEnvAgent {os.environ['TEST_AGENT_MARK']}"
    subprocess.run(["/bin/sh", "-c", f"{sys.executable} -c '{agent}' &"], check=True)
    print("agent started", flush=True)
    time.sleep(60)

rx.ray.init = init
rx.RayExecutor()._connect()
"""


def _agents(mark: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and mark.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                out.append(int(d))
        except OSError:
            pass
    return out


def test_an_orphaned_ray_process_of_a_driver_killed_in_start_up_is_reaped():
    """A Ray process that was never the driver's descendant when the reaper looked (orphaned at once)
    dies with the driver. Guards against the reaper of overinterp 0.2 (it SIGKILLed the driver's Ray
    descendants it had seen every 0.3 s; such an orphan ran on — the agents left after a kill 6 s
    into start-up)."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"TEST_AGENT_MARK": mark}
    driver = subprocess.Popen([sys.executable, "-c", ORPHANING_DRIVER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "agent started"
        time.sleep(1.0)  # the reaper has looked several times since
        agents = _agents(mark)
        assert len(agents) == 1
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while _agents(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _agents(mark), "the orphaned agent survived its driver by 10 s"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _agents(mark):
            os.kill(pid, signal.SIGKILL)


def test_the_reaper_kills_marked_processes_only(tmp_path):
    """The reaper's own pass: processes with the token go, a process without it (and one with another
    token) stays; it runs as a script without the package (``-I``: no PYTHONPATH)."""
    code = "import time; print('up', flush=True); time.sleep(60)"

    def spawn(token: str | None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != _reaper.MARK}
        if token is not None:
            env[_reaper.MARK] = token
        p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        return p

    token = uuid.uuid4().hex
    ours, other, unmarked = spawn(token), spawn("another"), spawn(None)
    try:
        # a reaper whose "driver" is this test process: closing its stdin says the driver is gone
        reaper = subprocess.Popen(
            [sys.executable, "-I", _reaper.__file__, str(os.getpid()), token], stdin=subprocess.PIPE
        )
        assert reaper.stdin is not None
        reaper.stdin.close()
        assert reaper.wait(timeout=30) == 0
        assert ours.wait(timeout=5) == -signal.SIGKILL
        assert other.poll() is None and unmarked.poll() is None
    finally:
        for p in (ours, other, unmarked):
            p.kill()
            p.wait()
