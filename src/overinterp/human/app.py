"""The study web app: ``create_app(study_dir, database_url, admin_token)`` → FastAPI.

Participant routes (the participant id in the URL is their only credential):

================================ ====================================================
``GET /``                        instructions, consent, start (or continue) button
``POST /api/participants``       ``{"consent": true}`` → new participant (or the one in
                                 this browser's cookie); ``{"participant", "url"}``
``GET /p/{participant}``         the question page
``GET /api/p/{p}/state``         progress and the current question (no labels)
``POST /api/p/{p}/answers``      ``{"stimulus", "position", "choice", "response_ms"}``;
                                 a repeat of a stored answer is a no-op
``GET /api/p/{p}/image/{s}``     PNG of a stimulus the participant has reached
================================ ====================================================

Admin: ``POST /api/admin/login`` with the token sets an HttpOnly cookie holding a random
session id (server-side, in this process, 12 h; ``POST /api/admin/logout`` revokes it), or
send ``Authorization: Bearer <token>``: ``GET /admin``, ``GET /api/admin/participants``,
``GET /admin/answers.csv``. ``GET /healthz`` answers ``{"status": "ok"}`` when the database
answers (503 otherwise) and nothing else.

Images are served by opaque id looked up in the database, never by a path from
the request; links are built from ``public_url`` or are relative, never from the
request's Host header; request bodies over ``max_body`` bytes get 413; malformed and
out-of-order requests (any JSON that is not the expected object, integers of more than
40 digits) get 4xx with a ``detail`` message. Per client address, wrong admin tokens
(login or bearer) and new participants are rate-limited (429 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from overinterp.human import db as dbm
from overinterp.human.pages import STATIC, admin_page, landing_page, message_page, question_page
from overinterp.human.study import load_manifest

__all__ = ["create_app", "RateLimiter", "SessionStore", "PARTICIPANT_COOKIE", "ADMIN_COOKIE"]

PARTICIPANT_COOKIE = "overinterp_participant"
ADMIN_COOKIE = "overinterp_admin"
PID = r"^[A-Za-z0-9_-]{16,64}$"
SID = r"^[0-9a-f]{32}$"
MAX_INT_DIGITS = 40  # longer integers in a JSON body are refused before int() sees them

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: read request bodies up to ``limit`` bytes; larger ones get 413."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = False
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                await _plain(send, 400, "invalid Content-Length")
                return
        chunks, size, more = [], 0, True
        while more and not too_big:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            too_big = size > self.limit
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_big:
            await _plain(send, 413, f"request body larger than {self.limit} bytes")
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


Clock = Callable[[], float]


class RateLimiter:
    """At most ``limit`` events per ``window_s`` seconds per key (a sliding window); thread-safe.

    ``limit=0`` turns it off. Only the newest ``limit`` events of a key are kept, and keys
    with no event in the window are dropped, so memory stays bounded by the active keys.
    """

    def __init__(self, limit: int, window_s: float = 60.0, *, clock: Clock = time.monotonic) -> None:
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"a rate limit is a whole number of events per minute ≥ 0 (0 = off), got {limit!r}")
        if not window_s > 0:
            raise ValueError(f"the rate-limit window must be > 0 seconds, got {window_s!r}")
        self.limit, self.window_s, self._clock = limit, float(window_s), clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def _wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may have one more event (0.0: now); the lock is held."""
        q = self._events.get(key)
        if q is None:
            return 0.0
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._events[key]
            return 0.0
        return max(0.0, q[0] + self.window_s - now) if len(q) >= self.limit else 0.0

    def _sweep(self, now: float) -> None:
        if now - self._swept >= self.window_s and len(self._events) > 256:
            for key in [k for k, q in self._events.items() if q[-1] <= now - self.window_s]:
                del self._events[key]
            self._swept = now

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may have one more event; 0.0 when it may now (nothing is recorded)."""
        if not self.limit:
            return 0.0
        with self._lock:
            return self._wait(key, self._clock())

    def hit(self, key: str) -> None:
        """Record one event of ``key``."""
        if not self.limit:
            return
        with self._lock:
            now = self._clock()
            self._sweep(now)
            self._wait(key, now)
            self._events.setdefault(key, deque(maxlen=self.limit)).append(now)

    def take(self, key: str) -> float:
        """Record one event of ``key`` if allowed and return 0.0, else return the seconds to wait."""
        if not self.limit:
            return 0.0
        with self._lock:
            now = self._clock()
            self._sweep(now)
            wait = self._wait(key, now)
            if wait == 0.0:
                self._events.setdefault(key, deque(maxlen=self.limit)).append(now)
            return wait

    def refund(self, key: str) -> None:
        """Take back the newest event of ``key`` (it turned out not to count)."""
        with self._lock:
            q = self._events.get(key)
            if q:
                q.pop()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class SessionStore:
    """Admin sessions of this process: random ids valid for ``ttl_s`` seconds unless revoked; thread-safe.

    Only SHA-256 digests of the ids are kept; at most ``max_sessions`` (the oldest go first).
    """

    def __init__(self, ttl_s: float = 12 * 3600, *, max_sessions: int = 1000, clock: Clock = time.monotonic) -> None:
        if not ttl_s > 0:
            raise ValueError(f"an admin session lasts > 0 seconds, got {ttl_s!r}")
        self.ttl_s, self.max_sessions, self._clock = float(ttl_s), max_sessions, clock
        self._expiry: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._expiry.items() if t <= now]:
            del self._expiry[key]

    def create(self) -> str:
        """A new session id (43 URL-safe characters, 256 random bits)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._prune(now)
            while len(self._expiry) >= self.max_sessions:
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self._expiry[_digest(sid)] = now + self.ttl_s
        return sid

    def valid(self, sid: str) -> bool:
        """Whether ``sid`` is a live session."""
        if not sid or len(sid) > 128:
            return False
        with self._lock:
            expiry = self._expiry.get(_digest(sid))
            if expiry is None:
                return False
            if expiry <= self._clock():
                del self._expiry[_digest(sid)]
                return False
            return True

    def revoke(self, sid: str) -> None:
        """End session ``sid`` (no-op when it is not one)."""
        with self._lock:
            self._expiry.pop(_digest(sid), None)

    def __len__(self) -> int:
        with self._lock:
            self._prune(self._clock())
            return len(self._expiry)


def _public_base(url: str | None) -> str:
    """``url`` checked and without its trailing slash; "" for none (links are then relative)."""
    if url is None or url == "":
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"public URL {url!r} must be http(s)://host[:port][/path] without query or fragment "
            "(e.g. https://study.example.org)"
        )
    return url.rstrip("/")


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    consent: bool


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    stimulus: str = Field(pattern=SID)
    position: int = Field(ge=0, le=100_000)
    choice: int = Field(ge=0, le=1000)
    response_ms: int | None = Field(default=None, ge=0, le=86_400_000)


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(min_length=1, max_length=512)


class _NumberTooLong(ValueError):
    pass


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong
    return int(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _json_body(request: Request, model: type[BaseModel]) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "send a JSON body with Content-Type: application/json")
    raw = await request.body()
    try:
        data = json.loads(raw.decode("utf-8"), parse_int=_parse_int, parse_constant=_no_constant)
    except _NumberTooLong:
        raise HTTPException(422, f"a number in the body has more than {MAX_INT_DIGITS} digits") from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        raise HTTPException(400, "the body is not valid JSON (or nested too deeply)") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, problems) from None


def create_app(
    study_dir: str | Path,
    database_url: str | None = None,
    admin_token: str | None = None,
    *,
    max_body: int = 4096,
    secure_cookies: bool = False,
    public_url: str | None = None,
    login_attempts_per_minute: int = 10,
    participants_per_minute: int = 30,
    admin_session_s: int = 12 * 3600,
    forwarded_allow_ips: str | list[str] | None = None,
) -> FastAPI:
    """The web app for the study in ``study_dir``.

    Args:
        database_url: SQLAlchemy URL (default: ``sqlite:///<study_dir>/study.sqlite``);
            the study is recorded there if it is not yet.
        admin_token: required for the admin view and export; ``None`` disables them.
        max_body: largest accepted request body in bytes.
        secure_cookies: mark cookies ``Secure`` (serve behind HTTPS).
        public_url: base URL participants' personal links start with (e.g.
            ``https://study.example.org``); ``None``: the links are relative paths.
        login_attempts_per_minute: wrong admin tokens (login or bearer) per client address
            per minute before 429 (0 = no limit).
        participants_per_minute: new participants per client address per minute before 429
            (0 = no limit); resuming an existing participant does not count.
        admin_session_s: lifetime of an admin login session in seconds.
        forwarded_allow_ips: the reverse proxies (IP addresses or networks, comma-separated
            or a list; ``"*"``: any peer) whose ``X-Forwarded-For``/``X-Forwarded-Proto``
            headers are believed. ``None`` (the default): none are, and the client address
            is always the TCP peer, so a client cannot pick the address its limits count under.

    The client address is the TCP peer, or, when the peer is one of ``forwarded_allow_ips``,
    the address the proxy forwarded; limits and sessions live in this process. Serve the app
    with the server's own proxy-header handling off (``human serve`` does).
    """
    base_url = _public_base(public_url)
    logins = RateLimiter(login_attempts_per_minute)
    creations = RateLimiter(participants_per_minute)
    sessions = SessionStore(admin_session_s)
    token_digest = _digest(admin_token) if admin_token else b""  # equal-length digests: a constant-time compare
    root = Path(study_dir).resolve()
    manifest = load_manifest(root)
    engine = dbm.make_engine(database_url or dbm.default_database_url(root))
    dbm.register_study(engine, manifest)
    study_id: str = manifest["study_id"]
    classes: list[str] = list(manifest["classes"])
    fractions: list[float] = list(manifest["fractions"])
    stimuli = {st["id"]: st for st in manifest["stimuli"]}
    batch_sizes = [sum(1 for st in manifest["stimuli"] if st["batch"] == b) for b in range(len(fractions))]
    total = len(stimuli)
    percents = [f"{100 * f:g}%" for f in fractions]

    # no trailing-slash redirects: Starlette would build their Location from the Host header
    app = FastAPI(
        title="overinterp human study", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )
    app.state.engine = engine
    app.state.manifest = manifest
    if forwarded_allow_ips:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=forwarded_allow_ips)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(OperationalError)
    async def busy(_request: Request, exc: OperationalError) -> JSONResponse:
        return JSONResponse({"detail": "the database is busy; try again"}, status_code=503)

    def cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict" if name == ADMIN_COOKIE else "lax",
            secure=secure_cookies,
            path="/",
        )

    def participant(pid: str, s: Session) -> dbm.Participant:
        p = s.get(dbm.Participant, pid)
        if p is None or p.study_id != study_id:
            raise HTTPException(404, "unknown participant link")
        return p

    def state(pid: str) -> dict[str, Any]:
        with Session(engine) as s:
            p = participant(pid, s)
            order = json.loads(p.order_json)
            answered = (
                s.scalar(select(func.count()).select_from(dbm.Answer).where(dbm.Answer.participant_id == pid)) or 0
            )
            out: dict[str, Any] = {
                "participant": pid,
                "total": len(order),
                "answered": answered,
                "done": answered >= len(order),
                "classes": classes,
                "batch": None,
                "question": None,
            }
            if answered < len(order):
                sid = order[answered]
                b = stimuli[sid]["batch"]
                out["batch"] = {
                    "index": b,
                    "count": len(fractions),
                    "fraction": fractions[b],
                    "percent": round(100 * fractions[b], 2),
                    "size": batch_sizes[b],
                    "answered": answered - sum(batch_sizes[:b]),
                }
                out["question"] = {"stimulus": sid, "position": answered, "image": f"/api/p/{pid}/image/{sid}"}
            return out

    def address(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def too_many(wait: float, what: str) -> HTTPException:
        seconds = max(1, math.ceil(wait))
        return HTTPException(429, f"too many {what}; try again in {seconds} s", headers={"Retry-After": str(seconds)})

    def check_token(request: Request, supplied: str) -> bool:
        """Whether ``supplied`` is the admin token (constant time); wrong ones count against the address."""
        key = address(request)
        wait = logins.take(key)  # reserve first: concurrent guesses cannot slip past the limit
        if wait:
            raise too_many(wait, "wrong admin tokens from this address")
        ok = hmac.compare_digest(_digest(supplied), token_digest)
        if ok:
            logins.refund(key)
        return ok

    def require_admin(request: Request) -> None:
        if not admin_token:
            raise HTTPException(403, "the admin view is disabled: start the server with an admin token")
        if sessions.valid(request.cookies.get(ADMIN_COOKIE, "")):
            return
        auth = request.headers.get("authorization", "")
        supplied = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not supplied or not check_token(request, supplied):
            raise HTTPException(401, "admin token required")

    def personal_link(pid: str) -> str:
        return f"{base_url}/p/{pid}"

    # ---- participant pages and API ------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def landing(request: Request) -> HTMLResponse:
        resume = None
        pid = request.cookies.get(PARTICIPANT_COOKIE, "")
        if pid and len(pid) <= 64:
            with Session(engine) as s:
                p = s.get(dbm.Participant, pid)
                if p is not None and p.study_id == study_id:
                    resume = f"/p/{pid}"
        return HTMLResponse(landing_page(total, classes, percents, resume))

    @app.post("/api/participants")
    async def start(request: Request) -> JSONResponse:
        body = await _json_body(request, StartBody)
        if not body.consent:
            raise HTTPException(422, "consent is required to take part")
        pid = request.cookies.get(PARTICIPANT_COOKIE, "")
        existing = False
        if pid and len(pid) <= 64:
            with Session(engine) as s:
                p = s.get(dbm.Participant, pid)
                existing = p is not None and p.study_id == study_id
        if not existing:
            wait = creations.take(address(request))
            if wait:
                raise too_many(wait, "new participants from this address")
            pid = dbm.create_participant(engine, study_id).id
        response = JSONResponse(
            {"participant": pid, "url": f"/p/{pid}", "resumed": existing}, status_code=200 if existing else 201
        )
        cookie(response, PARTICIPANT_COOKIE, pid, 60 * 60 * 24 * 60)
        return response

    @app.get("/p/{pid}", response_class=HTMLResponse)
    def question(pid: str = PathParam(pattern=PID)) -> HTMLResponse:
        with Session(engine) as s:
            p = s.get(dbm.Participant, pid)
            if p is None or p.study_id != study_id:
                return HTMLResponse(message_page("Unknown link", "This participant link is not valid."), 404)
        response = HTMLResponse(question_page(pid, classes, personal_link(pid)))
        cookie(response, PARTICIPANT_COOKIE, pid, 60 * 60 * 24 * 60)
        return response

    @app.get("/api/p/{pid}/state")
    def get_state(pid: str = PathParam(pattern=PID)) -> dict[str, Any]:
        return state(pid)

    @app.post("/api/p/{pid}/answers")
    async def answer(request: Request, pid: str = PathParam(pattern=PID)) -> JSONResponse:
        body = await _json_body(request, AnswerBody)
        if body.stimulus not in stimuli:
            raise HTTPException(404, "unknown image")
        try:
            a, repeat = dbm.record_answer(
                engine, pid, body.stimulus, body.choice, body.position, len(classes), body.response_ms
            )
        except dbm.AnswerError as exc:
            raise HTTPException(exc.status, exc.message) from None
        return JSONResponse(
            {"stored": True, "repeat": repeat, "answered_at": dbm._iso(a.answered_at), "state": state(pid)},
            status_code=200 if repeat else 201,
        )

    @app.get("/api/p/{pid}/image/{sid}")
    def image(pid: str = PathParam(pattern=PID), sid: str = PathParam(pattern=SID)) -> Response:
        with Session(engine) as s:
            p = participant(pid, s)
            order = json.loads(p.order_json)
            answered = (
                s.scalar(select(func.count()).select_from(dbm.Answer).where(dbm.Answer.participant_id == pid)) or 0
            )
            row = s.get(dbm.Stimulus, sid)
        # only the current question's image, or one already answered: no peeking ahead at larger subsets
        if row is None or row.study_id != study_id or sid not in order[: answered + 1]:
            raise HTTPException(404, "no such image for this participant")
        path = (root / row.file).resolve()
        if root not in path.parents or path.suffix != ".png" or not path.is_file():
            raise HTTPException(404, "image file missing")
        return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "not found")
        media, text = STATIC[name]
        return Response(text, media_type=media, headers={"Cache-Control": "public, max-age=600"})

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    def health() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "unavailable", "detail": "the database does not answer"}, 503)
        return JSONResponse({"status": "ok"})

    # ---- admin -----------------------------------------------------------------------
    @app.get("/admin", response_class=HTMLResponse)
    def admin() -> HTMLResponse:
        return HTMLResponse(admin_page(manifest.get("name", study_id)))

    @app.post("/api/admin/login")
    async def login(request: Request) -> JSONResponse:
        body = await _json_body(request, LoginBody)
        if not admin_token:
            raise HTTPException(403, "the admin view is disabled: start the server with an admin token")
        if not check_token(request, body.token):
            raise HTTPException(401, "wrong admin token")
        sessions.revoke(request.cookies.get(ADMIN_COOKIE, ""))  # a new login replaces this browser's session
        response = JSONResponse({"ok": True})
        cookie(response, ADMIN_COOKIE, sessions.create(), admin_session_s)
        return response

    @app.post("/api/admin/logout")
    def logout(request: Request) -> JSONResponse:
        sessions.revoke(request.cookies.get(ADMIN_COOKIE, ""))
        response = JSONResponse({"ok": True})
        response.delete_cookie(ADMIN_COOKIE, path="/")
        return response

    @app.get("/api/admin/participants")
    def participants(request: Request) -> dict[str, Any]:
        require_admin(request)
        with Session(engine) as s:
            counts = dict(
                s.execute(select(dbm.Answer.participant_id, func.count()).group_by(dbm.Answer.participant_id)).all()
            )
            rows = s.scalars(
                select(dbm.Participant).where(dbm.Participant.study_id == study_id).order_by(dbm.Participant.number)
            ).all()
            out = [
                {
                    "number": p.number,
                    "answered": counts.get(p.id, 0),
                    "started_at": dbm._iso(p.created_at),
                    "completed_at": dbm._iso(p.completed_at) or None,
                }
                for p in rows
            ]
        return {
            "study": study_id,
            "total": total,
            "participants": out,
            "completed": sum(1 for p in out if p["completed_at"]),
            "answers": sum(p["answered"] for p in out),
        }

    @app.get("/admin/answers.csv")
    def export(request: Request) -> Response:
        require_admin(request)
        return Response(
            dbm.export_csv(engine, study_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="answers-{study_id}.csv"'},
        )

    app.add_middleware(BodyLimit, limit=max_body)
    return app
