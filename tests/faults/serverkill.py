"""SIGKILL the study web server (``python -m overinterp human serve``) while participants
answer concurrently, restart it on the same database, and check that no acknowledged
answer was lost.

Several client threads each take part as a few participants, one after the other, and
answer every question (GET the state, POST the answer); a request cut by a kill is not
acknowledged, and the client simply reads its state again once the server is back. The
server runs in its own session on a free loopback port and is killed with
``os.killpg(…, SIGKILL)`` when the acknowledged answers reach seeded random counts (plus a
seeded few milliseconds). At the end every answer that got a 2xx must be in the database
with its choice and position, every stored answer must be one a client sent, and every
participant must be complete.

New participants are rate-limited by the app; when ``human serve`` has a
``--participants-per-minute`` option it is raised for the run, else a 429 is waited out
(``Retry-After``). Import as ``faults.serverkill``; the study comes from tests/human/humankit.py
(on the path through tests/faults/conftest.py, or bench/faults.py).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.jobkill import group_alive

__all__ = ["ServerKillReport", "run_server_kills", "serve_options", "free_port"]

TOKEN = "fault-admin-token"
#: ``human serve`` options raised for the run when they exist (the app's per-client limits)
LIMIT_OPTIONS = {"--participants-per-minute": "100000", "--login-attempts-per-minute": "100000"}


@dataclass
class ServerKillReport:
    """What one run of concurrent participants and server kills did and found."""

    kills: int = 0
    participants: int = 0  # participants the clients finished
    acknowledged: int = 0  # answers that got a 2xx
    stored: int = 0  # answers in the database at the end
    lost: list[str] = field(default_factory=list)  # acknowledged, but missing or different in the database
    phantom: list[str] = field(default_factory=list)  # stored, but no client sent it
    cut: int = 0  # answer requests a kill cut off (no reply)
    stored_unacknowledged: int = 0  # answers stored whose every request was cut (committed, then the server died)
    server_errors: int = 0  # 5xx answers
    rate_limited: int = 0  # 429 answers waited out
    limit_options: list[str] = field(default_factory=list)  # the serve options raised for the run
    leftover_processes: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> bool:
        return (
            self.acknowledged > 0
            and not self.lost
            and not self.phantom
            and not self.server_errors
            and not self.leftover_processes
            and not self.problems
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_options() -> list[str]:
    """The options of ``overinterp human serve`` (read from the parser, in this process)."""
    from overinterp.cli import build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command")  # noqa: SLF001 - argparse keeps subparsers here
    human = sub.choices["human"]
    hsub = next(a for a in human._actions if a.dest == "human_command")  # noqa: SLF001
    return [o for a in hsub.choices["serve"]._actions for o in a.option_strings]  # noqa: SLF001


class _Server:
    """``overinterp human serve`` in its own session on 127.0.0.1."""

    def __init__(self, study: Path, port: int, log: Path, extra: list[str]) -> None:
        self.study, self.port, self.log, self.extra = study, port, log, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        import httpx

        env = {**os.environ, "OVERINTERP_ADMIN_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "overinterp", "human", "serve", "--study", str(self.study)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *self.extra]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer /healthz within {timeout:.0f} s")

    def kill9(self) -> bool:
        """SIGKILL the server's process group; whether the group is gone within 5 s."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return _gone(self.proc.pid)

    def stop(self) -> bool:
        if self.proc is None:
            return True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return _gone(self.proc.pid)


def _gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class _Ledger:
    """What the clients sent and what was acknowledged (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: set[tuple[str, int, str, int]] = set()  # (participant, position, stimulus, choice)
        self.acked: dict[tuple[str, int], tuple[str, int]] = {}  # (participant, position) → (stimulus, choice)
        self.cut: set[tuple[str, int, str, int]] = set()
        self.server_errors = 0
        self.rate_limited = 0
        self.finished = 0
        self.problems: list[str] = []


def _participant(client: Any, ledger: _Ledger, rng: random.Random, deadline: float) -> None:
    """Take part once, from consent to the last answer, through any number of server deaths."""
    import httpx

    def call(method: str, url: str, **kw: Any) -> httpx.Response | None:
        """One request; ``None`` when the connection broke (the server died)."""
        try:
            r = client.request(method, url, **kw)
        except httpx.TransportError:
            time.sleep(0.05)
            return None
        if r.status_code >= 500:
            with ledger.lock:
                ledger.server_errors += 1
                ledger.problems.append(f"{method} {url}: {r.status_code} {r.text[:200]}")
        return r

    pid = None
    while pid is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no participant could be created before the deadline")
        client.cookies.clear()  # a new participant, not the one this client's cookie names
        r = call("POST", "/api/participants", json={"consent": True})
        if r is not None and r.status_code == 429:
            with ledger.lock:
                ledger.rate_limited += 1
            time.sleep(min(float(r.headers.get("Retry-After", "1") or 1), 5.0))
        elif r is not None and r.status_code in (200, 201):
            pid = r.json()["participant"]
        elif r is not None and r.status_code < 500:
            raise RuntimeError(f"creating a participant: {r.status_code} {r.text[:200]}")
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"participant {pid} not finished before the deadline")
        r = call("GET", f"/api/p/{pid}/state")
        if r is None or r.status_code != 200:
            continue
        state = r.json()
        if state["done"]:
            break
        q = state["question"]
        choice = rng.randrange(len(state["classes"]))
        key = (pid, q["position"], q["stimulus"], choice)
        with ledger.lock:
            ledger.sent.add(key)
        body = {"stimulus": q["stimulus"], "position": q["position"], "choice": choice, "response_ms": 100}
        r = call("POST", f"/api/p/{pid}/answers", json=body)
        if r is None:
            with ledger.lock:
                ledger.cut.add(key)
        elif r.status_code in (200, 201):
            with ledger.lock:
                prior = ledger.acked.setdefault((pid, q["position"]), (q["stimulus"], choice))
                if prior != (q["stimulus"], choice):
                    ledger.problems.append(f"position {q['position']} of {pid} acknowledged twice, differently")
        else:  # 409 included: each participant is one thread, and the state was read just before
            with ledger.lock:
                ledger.problems.append(f"answer refused: {r.status_code} {r.text[:200]}")
    with ledger.lock:
        ledger.finished += 1


def run_server_kills(
    root: Path,
    *,
    kills: int = 2,
    seed: int = 0,
    clients: int = 4,
    participants_per_client: int = 2,
    timeout: float = 240.0,
) -> ServerKillReport:
    """Build a tiny study in ``root``, serve it, let ``clients`` threads answer as
    ``participants_per_client`` participants each, SIGKILL and restart the server ``kills``
    times, then compare the acknowledged answers with the database."""
    import httpx
    from humankit import build_tiny_study

    from overinterp.human import db as dbm

    t0 = time.monotonic()
    rep = ServerKillReport()
    rng = random.Random(seed)
    study = root / "study"
    manifest = build_tiny_study(study)
    questions = len(manifest["stimuli"])
    total = clients * participants_per_client * questions
    options = serve_options()
    extra: list[str] = []
    for opt, value in LIMIT_OPTIONS.items():
        if opt in options:
            extra += [opt, value]
            rep.limit_options.append(f"{opt} {value}")
    server = _Server(study, free_port(), root / "server.log", extra)
    # kill when the acknowledged answers reach these counts (between 10% and 85% of all)
    marks = sorted(rng.sample(range(max(1, total // 10), max(2, total * 85 // 100)), kills))
    pauses = [rng.uniform(0.0, 0.03) for _ in marks]
    ledger = _Ledger()
    deadline = t0 + timeout
    errors: list[BaseException] = []

    def client_thread(i: int) -> None:
        crng = random.Random(seed * 1000 + i)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as c:
                for _ in range(participants_per_client):
                    _participant(c, ledger, crng, deadline)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    server.start()
    threads = [threading.Thread(target=client_thread, args=(i,), daemon=True) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        for mark, pause in zip(marks, pauses):
            while len(ledger.acked) < mark and any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                time.sleep(0.001)
            if not any(t.is_alive() for t in threads):
                rep.problems.append(f"the clients finished before kill {rep.kills + 1} (at {mark} answers)")
                break
            time.sleep(pause)
            if not server.kill9():
                rep.leftover_processes += 1
            rep.kills += 1
            server.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
    finally:
        if not server.stop():
            rep.leftover_processes += 1
    rep.problems += [f"a client failed: {type(e).__name__}: {e}" for e in errors]
    rep.problems += ledger.problems[:20]
    if any(t.is_alive() for t in threads):
        rep.problems.append("clients still running at the deadline")
    url = dbm.default_database_url(study)
    engine = dbm.make_engine(url, create=False)
    try:
        rows = dbm.export_rows(engine, manifest["study_id"])
    finally:
        engine.dispose()
    stored = {(r["participant"], int(r["position"])): (r["stimulus"], int(r["choice"])) for r in rows}
    with sqlite3.connect(study / "study.sqlite") as con:
        check = con.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        rep.problems.append(f"sqlite integrity_check: {check}")
    rep.stored, rep.acknowledged = len(rows), len(ledger.acked)
    rep.lost = [f"{k}: acknowledged {v}, stored {stored.get(k)}" for k, v in ledger.acked.items() if stored.get(k) != v]
    rep.phantom = [f"{k}: {v}" for k, v in stored.items() if (k[0], k[1], v[0], v[1]) not in ledger.sent]
    rep.cut = len(ledger.cut)
    rep.stored_unacknowledged = len(
        {(k[0], k[1]) for k in ledger.cut if stored.get((k[0], k[1])) == (k[2], k[3])} - set(ledger.acked)
    )
    rep.server_errors, rep.rate_limited = ledger.server_errors, ledger.rate_limited
    rep.participants = ledger.finished
    if ledger.finished != clients * participants_per_client:
        rep.problems.append(f"{ledger.finished} of {clients * participants_per_client} participants finished")
    per_participant: dict[str, int] = {}
    for pid, _ in stored:
        per_participant[pid] = per_participant.get(pid, 0) + 1
    finished = {pid for pid, _ in ledger.acked}
    unfinished = [p for p in finished if per_participant.get(p) != questions]
    if unfinished:
        rep.problems.append(f"{len(unfinished)} participants do not have all {questions} answers stored")
    rep.seconds = time.monotonic() - t0
    return rep
