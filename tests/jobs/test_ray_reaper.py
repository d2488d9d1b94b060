"""A Ray driver SIGKILLed at any moment — during Ray's start-up included — leaves no Ray process
behind (the reaper, :mod:`overinterp.jobs._reaper`); the reaper runs as a plain script."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from overinterp.jobs import _reaper

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper and this test read /proc (Linux)")

#: the driver: reports when it is about to start Ray and when ``ray.init`` returned, then waits in a task
DRIVER = """
import sys, time
import ray
from overinterp.jobs import get_executor

real_init = ray.init
def init(*a, **k):
    out = real_init(*a, **k)
    print("init done", flush=True)
    return out
ray.init = init

def wait(x):
    time.sleep(120)
    return x

executor = get_executor("ray", num_cpus=1, max_retries=0, init_kwargs=dict(
    num_cpus=1, object_store_memory=80 * 2**20, configure_logging=False, _temp_dir=sys.argv[1]))
print("starting ray", flush=True)
executor.map(wait, [0], print)
"""


def _ours(mark: str, temp_dir: str) -> dict[int, str]:
    """Live processes (no zombies) started by the driver: its environment marker, or Ray's temp folder
    on their command line (two independent signs); pid → command."""
    needle, found = f"\0TEST_DRIVER_MARK={mark}\0".encode(), {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            env = b"\0" + Path(f"/proc/{d}/environ").read_bytes() + b"\0"
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            stat = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 :].split()[0] == b"Z":
            continue
        if needle in env or temp_dir.encode() in cmd:
            found[int(d)] = cmd.replace(b"\0", b" ").decode(errors="replace")[:80]
    return found


def _kill_driver_after(delay: float) -> dict[str, object]:
    """Start a driver, SIGKILL it ``delay`` s after it starts Ray; how it went."""
    mark = uuid.uuid4().hex
    temp_dir = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"OMP_NUM_THREADS": "1", "TEST_DRIVER_MARK": mark}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, temp_dir], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(text == "starting ray" for _, text in lines):
            assert driver.poll() is None and time.monotonic() < deadline, f"driver did not start: {lines}"
            time.sleep(0.01)
        started = next(t for t, text in lines if text == "starting ray")
        time.sleep(max(0.0, started + delay - time.monotonic()))
        running = _ours(mark, temp_dir)
        in_start_up = not any(text == "init done" for _, text in lines)
        os.kill(driver.pid, signal.SIGKILL)
        killed = time.monotonic()
        driver.wait()
        left = _ours(mark, temp_dir)
        while left and time.monotonic() - killed < 20:
            time.sleep(0.1)
            left = _ours(mark, temp_dir)
        return {
            "delay": delay,
            "ray_processes_at_kill": len(running),
            "in_start_up": in_start_up,
            "seconds_to_clean": round(time.monotonic() - killed, 2),
            "left": left,
        }
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _ours(mark, temp_dir):  # never leak what this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_driver_killed_during_ray_start_up_leaves_no_ray_process():
    """SIGKILL the driver 0.5, 2 and 6 s after it starts Ray (its ``ray.init`` takes seconds here):
    no process it started survives 20 s (the reaper needs about one). Guards against a reaper that
    only knows the driver's descendants from its last look (agents spawned after it, then orphaned
    by the raylet's death, ran on for 30+ s), and one started after ``ray.init``."""
    runs = [_kill_driver_after(d) for d in (0.5, 2.0, 6.0)]
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
