"""A seeded fuzz of every route of the study web app, in process (FastAPI's TestClient:
no socket, nothing leaves the machine).

Each request draws a method (mostly the route's own), a path (the app's route table with
its parameters filled by live, unknown or junk ids, or junk paths), a body (the route's
JSON object with fields swapped for wrong types, big numbers, NaN/Infinity, unicode and
lone surrogates, deep nesting within the body limit, junk bytes, oversized bodies),
cookies and headers (tokens, content types, lengths, hosts). About one request in ten is
a valid next answer of a live participant, so later states (answered images, finished
participants, the export) are reached too. Every answer must be a 4xx or a 2xx, never a
5xx; afterwards the database must still be consistent.

JSON integers of more than :data:`MAX_DIGITS` digits are left out: one over 4,300 digits
is a known defect being fixed elsewhere. Import as ``faults.fuzz``.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from sqlalchemy import func, select

__all__ = ["FuzzReport", "fuzz_app", "MAX_DIGITS", "TOKEN", "dumps", "Raw"]

TOKEN = "fuzz-admin-token"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
#: the largest JSON integer sent (digits); over 4,300 is a known defect fixed elsewhere
MAX_DIGITS = 4000
PID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ODD_TEXT = ["é", "中文", "🙂", "\u0000", "\u202e", "\ufeff", "\x7f", "𝕏", "\u200b", "ß" * 40]
JUNK_SEGMENTS = ["..", "%2e%2e", "%2F", "%00", "%ff", "é", "~", "*", ";x=1", "a b", "%", "\\", "NUL", "..;"]


class Raw(str):
    """JSON text :func:`dumps` writes as it is (NaN, 1e400, a long integer, a ``\\ud800`` escape)."""


def dumps(v: Any) -> str:
    """JSON text of ``v``, with :class:`Raw` pieces verbatim and keys of any JSON kind."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{dumps(k if isinstance(k, str) else str(k))}:{dumps(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


@dataclass
class FuzzReport:
    """What the fuzz sent and got back."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # each 5xx: the request and the answer
    not_sent: list[str] = field(default_factory=list)  # requests the client itself refused to build
    routes: int = 0  # (method, path) pairs in the app's route table
    routes_hit: int = 0  # …of which the fuzz called with their own method at least once
    valid_answers: int = 0  # answers stored (201) for the live participants
    db_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def count_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


class _Live:
    """The participants the fuzz keeps answering for (ids, presentation orders, progress)."""

    def __init__(self, engine: Any, study_id: str, n: int) -> None:
        from overinterp.human import db as dbm

        self.engine, self.study_id = engine, study_id
        self.pids = [dbm.create_participant(engine, study_id).id for _ in range(n)]
        self.orders = {p: self._order(p) for p in self.pids}
        self.done = dict.fromkeys(self.pids, 0)

    def _order(self, pid: str) -> list[str]:
        from overinterp.human import db as dbm

        with dbm.Session(self.engine) as s:
            return json.loads(s.get(dbm.Participant, pid).order_json)

    def current(self) -> str:
        """A live participant with questions left (the first one if all are done)."""
        left = [p for p in self.pids if self.done[p] < len(self.orders[p])]
        return left[0] if left else self.pids[0]


def _text(rng: random.Random, live: _Live) -> Any:
    pid = live.current()
    k = rng.randrange(10)
    if k == 0:
        return ""
    if k == 1:
        return "".join(rng.choice(ODD_TEXT) for _ in range(rng.randint(1, 6)))
    if k == 2:
        return Raw(rng.choice(['"\\ud800"', '"\\udfff x"', '"\\u0000"', '"a\\ud83d"', '"\\uDBFF\\uDFFF"']))
    if k == 3:
        return "x" * rng.randint(100, 600)
    if k == 4:
        return rng.choice(live.orders[pid])
    if k == 5:
        return pid
    if k == 6:
        return "".join(rng.choice("0123456789abcdef") for _ in range(32))
    if k == 7:
        return rng.choice(["../study.json", "' OR 1=1 --", "<script>alert(1)</script>", "%s%n", "${x}", "true"])
    return "".join(rng.choice(PID_CHARS) for _ in range(rng.randint(1, 40)))


def _number(rng: random.Random) -> Any:
    k = rng.randrange(9)
    if k == 0:
        return rng.randint(-5, 30)
    if k == 1:
        digits = rng.choice([19, 20, 41, 300, 1000, rng.randint(2, MAX_DIGITS)])
        return Raw(rng.choice(["", "-"]) + "9" + "".join(rng.choice("0123456789") for _ in range(digits - 1)))
    if k == 2:
        return Raw(rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0.0", "1E2"]))
    if k == 3:
        return rng.uniform(-1e6, 1e6)
    if k == 4:
        return rng.choice([2**31, 2**63, -(2**63) - 1, 2**64, 86_400_001, 100_001, 1001])
    if k == 5:
        return Raw(str(rng.randint(0, 99)) + "." + "0" * rng.randint(1, 400) + "1")
    if k == 6:
        return rng.choice([True, False])
    if k == 7:
        return None
    return rng.randint(0, 3)


def _value(rng: random.Random, live: _Live, depth: int = 0) -> Any:
    k = rng.randrange(8 if depth < 4 else 5)
    if k < 2:
        return _number(rng)
    if k < 5:
        return _text(rng, live)
    if k < 6:
        return [_value(rng, live, depth + 1) for _ in range(rng.randint(0, 4))]
    if k < 7:
        return {str(_text(rng, live))[:20]: _value(rng, live, depth + 1) for _ in range(rng.randint(0, 4))}
    return _deep(rng)


def _deep(rng: random.Random) -> Raw:
    """Nesting deep enough to trip a recursive parser, within a 4,096-byte body."""
    d = rng.choice([10, 100, 500, 999, 1000, 1001, 1500, rng.randint(2, 1800)])
    if rng.random() < 0.5:
        return Raw("[" * d + "]" * d)
    d = min(d, 700)
    return Raw('{"a":' * d + "1" + "}" * d)


def _valid_body(path: str, live: _Live, pid: str) -> dict[str, Any]:
    if path == "/api/participants":
        return {"consent": True}
    if path == "/api/admin/login":
        return {"token": TOKEN}
    order, done = live.orders.get(pid, []), live.done.get(pid, 0)
    sid = order[min(done, len(order) - 1)] if order else "0" * 32
    return {"stimulus": sid, "position": done, "choice": 1, "response_ms": 500}


def _body(rng: random.Random, path: str, live: _Live, pid: str, max_body: int) -> bytes | None:
    k = rng.randrange(20)
    if k == 0:
        return None
    if k == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if k == 2:
        return b"\xff\xfe" + dumps(_valid_body(path, live, pid)).encode()
    if k == 3:
        return dumps(_valid_body(path, live, pid)).encode()[: rng.randint(0, 30)]  # truncated
    if k == 4:
        return b"{" + b'"a": ' * 2 + b"x" * (max_body + rng.randint(1, 2000)) + b"}"  # over the limit
    if k == 5:
        return dumps(_deep(rng)).encode()
    if k == 6:
        return dumps(_value(rng, live)).encode()
    body: dict[str, Any] = dict(_valid_body(path, live, pid))
    fields = list(body)
    for _ in range(rng.randint(0, 3)):
        op = rng.randrange(4)
        if op == 0 and fields:
            body[rng.choice(fields)] = _value(rng, live)
        elif op == 1 and fields:
            body.pop(rng.choice(fields), None)
        elif op == 2:
            body[str(_text(rng, live))[:30] or "extra"] = _value(rng, live)
        else:
            body[rng.choice(fields or ["x"])] = _number(rng)
    text = dumps(body)
    if rng.random() < 0.1:
        text = text.replace("{", '{"consent": true, ', 1)  # duplicate or extra keys
    data = text.encode("utf-8", errors="surrogatepass")
    return data if len(data) <= max_body + 2000 else data[: max_body + 2000]


def _headers(rng: random.Random, body: bytes | None, live: _Live) -> dict[str, Any]:
    h: dict[str, Any] = {}
    if body is not None or rng.random() < 0.2:
        h["Content-Type"] = rng.choice(
            ["application/json"] * 6
            + ["APPLICATION/JSON", "application/json; charset=utf-16", "text/plain", "", "multipart/form-data; b=x"]
            + ["application/x-www-form-urlencoded", "application/json;;", b"application/json\xff"]
        )
    r = rng.random()
    if r < 0.1:
        h["Authorization"] = f"Bearer {TOKEN}"
    elif r < 0.25:
        h["Authorization"] = rng.choice(
            ["Bearer ", "Bearer x", "Basic YWRtaW46eA==", "bearer " + TOKEN.upper(), "Bearer " + "t" * 600]
            + [b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer \xff", "Token " + TOKEN]
        )
    r = rng.random()
    if r < 0.15:
        h["Cookie"] = f"overinterp_participant={live.current()}"
    elif r < 0.3:
        h["Cookie"] = rng.choice(
            ["overinterp_participant=" + "A" * 70, "overinterp_admin=x", "=;;==;", "overinterp_participant=../x"]
            + [b"overinterp_participant=\xc3\xa9", "overinterp_admin=" + TOKEN, "a=" + "b" * 2000]
        )
    if rng.random() < 0.05 and body is not None:
        h["Content-Length"] = rng.choice(["abc", "-1", "1e3", " 12", "99999999999999999999", str(len(body) + 7)])
    if rng.random() < 0.05:
        h["Host"] = rng.choice(["evil.example", "", "a" * 300, "127.0.0.1:0"])
    if rng.random() < 0.05:
        h["X-Forwarded-For"] = rng.choice(["1.2.3.4", "garbage", "::1, 10.0.0.1", "x" * 200])
    if rng.random() < 0.05:
        h["Accept"] = rng.choice(["*/*", "text/html;q=0.x", "image/png", "\x01"])
    return h


def _fill(rng: random.Random, template: str, live: _Live) -> str:
    pid = live.current()
    order, done = live.orders[pid], live.done[pid]
    k = rng.randrange(5)
    fills = {
        "pid": [pid, pid, "".join(rng.choice(PID_CHARS) for _ in range(24)), "a;b", rng.choice(JUNK_SEGMENTS)][k],
        "sid": [
            order[min(done, len(order) - 1)],
            order[max(done - 1, 0)],
            order[-1],
            "".join(rng.choice("0123456789abcdef") for _ in range(32)),
            rng.choice(JUNK_SEGMENTS + ["..%2F..%2Fstudy.json", "A" * 32]),
        ][rng.randrange(5)],
        "name": rng.choice(["style.css", "question.js", "admin.js", "landing.js", "app.py", "..%2Fstudy.json", ""]),
    }
    out = template
    for key, value in fills.items():
        out = out.replace("{" + key + "}", value)
    return out


def _junk_path(rng: random.Random, templates: list[str], live: _Live) -> str:
    k = rng.randrange(6)
    base = _fill(rng, rng.choice(templates), live)
    if k == 0:
        return "/" + "/".join(
            rng.choice(JUNK_SEGMENTS + ["api", "p", "admin", "static"]) for _ in range(rng.randint(1, 6))
        )
    if k == 1:
        return base + rng.choice(["/", "/extra", "//", "/.."])
    if k == 2:
        pairs = [(rng.choice(["a", "pid", "token", "x"]), str(_text(rng, live))[:60]) for _ in range(3)]
        return base + "?" + urlencode(pairs, errors="surrogatepass")
    if k == 3:
        return "/" + "a/" * rng.randint(50, 400)
    if k == 4:
        return base.replace("/", "//", 1)
    return rng.choice(["/study.json", "/images/x.png", "/api", "/api/p", "/api/p//state", "/docs", "/openapi.json"])


def _check_database(engine: Any, study_id: str) -> list[str]:
    """Every participant's answers are its first questions, in order, with choices in range."""
    from overinterp.human import db as dbm

    problems = []
    with dbm.Session(engine) as s:
        n_classes = len(json.loads(s.get(dbm.Study, study_id).classes_json))
        for p in s.scalars(select(dbm.Participant).where(dbm.Participant.study_id == study_id)):
            order = json.loads(p.order_json)
            answers = sorted(
                s.scalars(select(dbm.Answer).where(dbm.Answer.participant_id == p.id)), key=lambda a: a.position
            )
            if [a.position for a in answers] != list(range(len(answers))):
                problems.append(f"participant {p.number}: answer positions {[a.position for a in answers]}")
            bad = [a.position for a in answers if a.position >= len(order) or order[a.position] != a.stimulus_id]
            if bad or any(not 0 <= a.choice < n_classes for a in answers):
                problems.append(f"participant {p.number}: answers not in its order or out of range at {bad}")
    return problems


def fuzz_app(
    study_dir: Path,
    *,
    requests: int = 1000,
    seed: int = 0,
    max_body: int = 4096,
    wrap: Callable[[Any], Any] | None = None,
) -> FuzzReport:
    """Send ``requests`` seeded requests to ``create_app(study_dir, …)`` (the study's default
    database) and report their statuses; 5xx answers are listed with their request.
    ``wrap`` (tests of the fuzz itself) wraps the app in ASGI middleware."""
    with warnings.catch_warnings():  # starlette asks for "httpx2"; the pinned client is httpx 0.28.1
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from overinterp.human import db as dbm
    from overinterp.human.app import create_app

    t0 = time.monotonic()
    rng = random.Random(seed)
    rep = FuzzReport()
    app = create_app(study_dir, None, TOKEN, max_body=max_body)
    study_id = app.state.manifest["study_id"]
    routes = sorted(
        (m, r.path) for r in app.routes if getattr(r, "methods", None) and r.path.startswith("/") for m in r.methods
    )
    routes = [(m, p) for m, p in routes if m != "HEAD"]
    templates = sorted({p for _, p in routes})
    rep.routes = len(routes)
    route_set = set(routes)
    hit: set[tuple[str, str]] = set()
    live = _Live(app.state.engine, study_id, 5)
    with TestClient(wrap(app) if wrap else app, raise_server_exceptions=False) as client:
        while rep.requests < requests:
            pid = live.current()
            if rng.random() < 0.1 and live.done[pid] < len(live.orders[pid]):  # a valid next answer
                body = _valid_body("/api/p/{pid}/answers", live, pid)
                method, template, url = "POST", "/api/p/{pid}/answers", f"/api/p/{pid}/answers"
                data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
            else:
                if rng.random() < 0.85:
                    method, template = rng.choice(routes)
                    url = _fill(rng, template, live)
                else:
                    method, template = "GET", ""
                    url = _junk_path(rng, templates, live)
                if rng.random() < 0.15:
                    method = rng.choice(METHODS)
                data = _body(rng, template, live, pid, max_body) if method in ("POST", "PUT", "PATCH") else None
                if data is None and rng.random() < 0.05:
                    data = dumps(_value(rng, live)).encode("utf-8", errors="surrogatepass")
                headers = _headers(rng, data, live)
            client.cookies.clear()  # only the cookies this request draws
            try:
                r = client.request(method, url, content=data, headers=headers)
            except Exception as exc:  # noqa: BLE001 - the client refused to build it: not sent, listed
                rep.not_sent.append(f"{method} {url[:120]!r}: {type(exc).__name__}: {exc}"[:300])
                continue
            rep.requests += 1
            rep.statuses[r.status_code] += 1
            if (method, template) in route_set:
                hit.add((method, template))
            if r.status_code >= 500:
                shown = {k: (v if isinstance(v, str) else repr(v))[:80] for k, v in headers.items()}
                sent = f"{method} {url[:200]} headers={shown} body={(data or b'')[:300]!r}"
                rep.server_errors.append(f"{sent} -> {r.status_code} {r.text[:200]}")
            if template == "/api/p/{pid}/answers" and method == "POST" and r.status_code == 201:
                owner = url.split("/")[3]
                if owner in live.done:
                    live.done[owner] += 1
                    rep.valid_answers += 1
        rep.db_problems = _check_database(app.state.engine, study_id)
        health = client.get("/healthz")
        if health.status_code != 200:
            rep.db_problems.append(f"/healthz after the fuzz: {health.status_code} {health.text[:200]}")
    # live.done must agree with the database: nothing stored that was not acknowledged with a 201
    with dbm.Session(app.state.engine) as s:
        for p in live.pids:
            n = s.scalar(select(func.count()).select_from(dbm.Answer).where(dbm.Answer.participant_id == p))
            if n != live.done[p]:
                rep.db_problems.append(f"a live participant has {n} answers stored, {live.done[p]} acknowledged")
    app.state.engine.dispose()
    rep.routes_hit = len(hit)
    rep.seconds = time.monotonic() - t0
    return rep
