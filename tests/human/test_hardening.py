"""Hardening of the study web app (issue 16): rate limits on wrong admin logins and on new
participants, server-side admin sessions revoked by logout, links never built from the Host
header, a liveness-only /healthz, and 4xx (never 5xx) for huge integers and wrong types."""

from __future__ import annotations

import json
import sys
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from overinterp.human import db as dbm  # noqa: E402
from overinterp.human.app import ADMIN_COOKIE, PARTICIPANT_COOKIE, RateLimiter, SessionStore, create_app  # noqa: E402

TOKEN = "hardening-admin-token"
JS = {"Content-Type": "application/json"}
EVIL = "evil.example"


class Clock:
    """A settable stand-in for ``time.monotonic``."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def client_for(app, host: str = "198.51.100.7") -> TestClient:
    """A test client whose requests come from ``host`` (the limits are per client address)."""
    return TestClient(app, client=(host, 40000), raise_server_exceptions=False)


def new_participant(c: TestClient) -> str:
    c.cookies.clear()
    r = c.post("/api/participants", json={"consent": True})
    assert r.status_code == 201, r.text
    return r.json()["participant"]


# ---- 1. rate limits ---------------------------------------------------------------------------


def test_rate_limiter_sliding_window():
    clock = Clock()
    rl = RateLimiter(3, 60.0, clock=clock)
    assert [rl.blocked("a") for _ in range(2)] == [0.0, 0.0]  # looking does not count
    for _ in range(3):
        rl.hit("a")
    assert rl.blocked("a") == pytest.approx(60.0) and rl.blocked("b") == 0.0  # per key
    clock.t += 30
    rl.hit("a")  # a hit while blocked still counts (the window slides)
    clock.t += 30.5  # the first three are out of the window, the fourth is not
    assert rl.blocked("a") == 0.0
    rl.hit("a")
    rl.hit("a")
    assert rl.blocked("a") == pytest.approx(29.5)
    assert RateLimiter(0, 60.0).blocked("a") == 0.0  # 0 = off
    with pytest.raises(ValueError, match="per minute"):
        RateLimiter(-1, 60.0)


def test_rate_limiter_is_thread_safe():
    """Four threads race for one slot, 4000 times: exactly one wins each time. (Without the lock,
    a check-then-record lets two in now and then: a few of the 4000 rounds on CPython.)"""
    rl, rounds, n = RateLimiter(1, 60.0), 4000, 4
    start = threading.Barrier(n)
    wins = [[False] * rounds for _ in range(n)]

    def worker(i: int) -> None:
        for r in range(rounds):
            start.wait()
            wins[i][r] = rl.take(f"key{r}") == 0.0

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert [r for r in range(rounds) if sum(w[r] for w in wins) != 1] == []


def test_wrong_admin_logins_are_limited_per_client(study):
    out, _ = study
    app = create_app(out, None, TOKEN)  # default: 10 wrong logins a minute
    with client_for(app) as c, client_for(app, "203.0.113.9") as other:
        codes = [c.post("/api/admin/login", json={"token": f"guess-{i}"}).status_code for i in range(10)]
        assert codes == [401] * 10
        r = c.post("/api/admin/login", json={"token": "guess-10"})
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60 and r.json()["detail"]
        # blocked means blocked: the right token is refused too (no oracle for the guesser), and bearer tokens
        assert c.post("/api/admin/login", json={"token": TOKEN}).status_code == 429
        assert c.get("/admin/answers.csv", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
        # participants from the same address are unaffected, and so is another address
        assert c.post("/api/participants", json={"consent": True}).status_code == 201
        assert other.post("/api/admin/login", json={"token": TOKEN}).status_code == 200


def test_wrong_bearer_tokens_count_as_wrong_logins(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN, login_attempts_per_minute=3)) as c:
        codes = [c.get("/admin/answers.csv", headers={"Authorization": f"Bearer g{i}"}).status_code for i in range(3)]
        assert codes == [401, 401, 401]
        assert c.post("/api/admin/login", json={"token": TOKEN}).status_code == 429
    # malformed logins (validation errors) are not guesses and do not count
    with client_for(create_app(out, None, TOKEN, login_attempts_per_minute=3)) as c:
        assert all(c.post("/api/admin/login", json={"token": ""}).status_code == 422 for _ in range(5))
        # nor do right tokens: an admin using the bearer header all day is never blocked
        assert all(c.post("/api/admin/login", json={"token": TOKEN}).status_code == 200 for _ in range(5))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert all(c.get("/admin/answers.csv", headers=bearer).status_code == 200 for _ in range(5))
        assert [c.post("/api/admin/login", json={"token": "x"}).status_code for _ in range(4)] == [401] * 3 + [429]
        # a logged-in admin's session cookie still works while the address is blocked
        assert c.get("/api/admin/participants").status_code == 200


def test_login_limit_off(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN, login_attempts_per_minute=0)) as c:
        assert all(c.post("/api/admin/login", json={"token": "x"}).status_code == 401 for _ in range(40))


def test_participant_creation_is_limited_per_client(study):
    out, _ = study
    app = create_app(out, None, TOKEN)  # default: 30 new participants a minute
    with client_for(app) as c, client_for(app, "203.0.113.9") as other:
        pids = [new_participant(c) for _ in range(30)]
        c.cookies.clear()
        r = c.post("/api/participants", json={"consent": True})
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60 and r.json()["detail"]
        # resuming is not creating: an existing participant's browser still gets in
        c.cookies.set(PARTICIPANT_COOKIE, pids[0])
        r = c.post("/api/participants", json={"consent": True})
        assert r.status_code == 200 and r.json()["participant"] == pids[0]
        assert other.post("/api/participants", json={"consent": True}).status_code == 201
    with dbm.Session(app.state.engine) as s:
        assert s.query(dbm.Participant).count() == 31


def test_participant_limit_is_a_parameter(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN, participants_per_minute=2)) as c:
        new_participant(c), new_participant(c)
        c.cookies.clear()
        assert c.post("/api/participants", json={"consent": True}).status_code == 429
    with client_for(create_app(out, None, TOKEN, participants_per_minute=0)) as c:
        assert len({new_participant(c) for _ in range(35)}) == 35


def test_serve_passes_the_limits_and_public_url(study, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    from overinterp.cli import main

    out, _ = study
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    argv = ["human", "serve", "--study", str(out), "--admin-token", TOKEN, "--public-url", "https://s.example.org"]
    assert main([*argv, "--login-attempts-per-minute", "2", "--participants-per-minute", "1"]) == 0
    with client_for(served["app"]) as c:
        pid = new_participant(c)
        c.cookies.clear()
        assert c.post("/api/participants", json={"consent": True}).status_code == 429
        assert f"https://s.example.org/p/{pid}" in c.get(f"/p/{pid}", headers={"Host": EVIL}).text
        assert [c.post("/api/admin/login", json={"token": "x"}).status_code for _ in range(3)] == [401, 401, 429]
    assert main(["human", "serve", "--study", str(out), "--public-url", "ftp://x"]) == 2
    assert main(["human", "serve", "--study", str(out), "--participants-per-minute", "-1"]) == 2


# ---- 2. admin sessions ------------------------------------------------------------------------


def test_admin_cookie_is_a_revocable_session(study):
    out, _ = study
    app = create_app(out, None, TOKEN)
    with client_for(app) as c, client_for(app) as thief:
        r = c.post("/api/admin/login", json={"token": TOKEN})
        sid = r.cookies[ADMIN_COOKIE]
        assert TOKEN not in sid and TOKEN not in r.headers["set-cookie"] and len(sid) >= 32
        assert "httponly" in r.headers["set-cookie"].lower() and "max-age=43200" in r.headers["set-cookie"].lower()
        thief.cookies.set(ADMIN_COOKIE, sid)  # a copied cookie works until logout ...
        assert thief.get("/api/admin/participants").status_code == 200
        assert c.post("/api/admin/logout").status_code == 200
        assert thief.get("/api/admin/participants").status_code == 401  # ... and not after
        assert thief.get("/admin/answers.csv").status_code == 401
        # the token as a cookie value is no credential; as a bearer header it still is
        thief.cookies.set(ADMIN_COOKIE, TOKEN)
        assert thief.get("/api/admin/participants").status_code == 401
        assert c.get("/admin/answers.csv", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # two logins are two sessions: logging one out leaves the other
        c.cookies.clear()
        a = c.post("/api/admin/login", json={"token": TOKEN}).cookies[ADMIN_COOKIE]
        c.cookies.clear()
        b = c.post("/api/admin/login", json={"token": TOKEN}).cookies[ADMIN_COOKIE]
        assert a != b
        c.cookies.set(ADMIN_COOKIE, a)
        c.post("/api/admin/logout")
        c.cookies.clear()
        c.cookies.set(ADMIN_COOKIE, b)
        assert c.get("/api/admin/participants").status_code == 200
    with client_for(create_app(out, None, TOKEN)) as c:  # sessions live in the server process
        c.cookies.set(ADMIN_COOKIE, b)
        assert c.get("/api/admin/participants").status_code == 401


def test_session_store_expiry_and_revocation():
    clock = Clock()
    store = SessionStore(ttl_s=3600.0, clock=clock)
    sid = store.create()
    other = store.create()
    assert store.valid(sid) and not store.valid("x" * 43) and not store.valid("")
    clock.t += 3599
    assert store.valid(sid)
    store.revoke(other)
    assert not store.valid(other)
    clock.t += 2
    assert not store.valid(sid)  # expired
    assert len(store) == 0  # expired and revoked sessions are dropped
    with pytest.raises(ValueError, match="seconds"):
        SessionStore(ttl_s=0)


def test_odd_tokens_are_401_not_500(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN, login_attempts_per_minute=0)) as c:
        for token in ["\ud800", "\x00", "\u00e9" * 100, TOKEN + "x", TOKEN[:-1], TOKEN.upper()]:
            r = c.post("/api/admin/login", content=json.dumps({"token": token}).encode(), headers=JS)
            assert r.status_code == (422 if token == "\ud800" else 401), (token, r.status_code, r.text)
            h = {"Authorization": f"Bearer {token}".encode("utf-8", "surrogatepass")}
            assert c.get("/api/admin/participants", headers=h).status_code == 401


# ---- 3. links never from the Host header -------------------------------------------------------


def test_forged_host_is_never_reflected(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN)) as c:
        h = {"Host": EVIL, "X-Forwarded-Host": EVIL}
        pid = new_participant(c)
        responses = [
            c.get(f"/p/{pid}", headers=h),
            c.post("/api/participants", json={"consent": True}, headers=h),
            c.get("/", headers=h),
            c.get(f"/api/p/{pid}/state", headers=h),
            c.get("/admin/", headers=h, follow_redirects=False),  # no redirect to http://<Host>/admin
            c.get(f"/p/{pid}/", headers=h, follow_redirects=False),
        ]
        for r in responses:
            assert EVIL not in r.text and EVIL not in str(r.headers), (r.request.url, r.status_code, r.headers)
            assert r.status_code < 500
        page = responses[0].text
        assert f'<code id="personal-link">/p/{pid}</code>' in page  # relative without a public URL
        assert responses[-1].status_code == 404 and "location" not in responses[-1].headers


def test_public_url_builds_the_personal_link(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN, public_url="https://study.example.org/")) as c:
        pid = new_participant(c)
        page = c.get(f"/p/{pid}", headers={"Host": EVIL}).text
        assert f"https://study.example.org/p/{pid}" in page and EVIL not in page
    for bad in ["ftp://study.example.org", "study.example.org", "https://", "https://x.org/?a=1", "https://x.org/#f"]:
        with pytest.raises(ValueError, match="public"):
            create_app(out, None, TOKEN, public_url=bad)


# ---- 4. healthz --------------------------------------------------------------------------------


def test_healthz_is_liveness_only(study):
    out, _ = study
    with client_for(create_app(out, None, TOKEN)) as c:
        empty = c.get("/healthz")
        new_participant(c)
        new_participant(c)
        r = c.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"} == empty.json()
        # the count is still there for the admin
        n = c.get("/api/admin/participants", headers={"Authorization": f"Bearer {TOKEN}"}).json()["participants"]
        assert len(n) == 2


# ---- 5. huge integers and wrong types: 4xx, never 5xx ------------------------------------------

HUGE = "9" * 5000


def _post_routes(pid: str, sid: str) -> list[tuple[str, dict]]:
    """(url, a valid body) for every JSON POST route."""
    return [
        ("/api/participants", {"consent": True}),
        (f"/api/p/{pid}/answers", {"stimulus": sid, "position": 0, "choice": 1, "response_ms": 10}),
        ("/api/admin/login", {"token": TOKEN}),
    ]


def _raw_body(body: dict, field: str, raw_value: str) -> bytes:
    parts = [f"{json.dumps(k)}: {raw_value if k == field else json.dumps(v)}" for k, v in body.items()]
    return ("{" + ", ".join(parts) + "}").encode()


@pytest.fixture()
def big_client(study):
    out, _ = study
    app = create_app(out, None, TOKEN, max_body=1_000_000, login_attempts_per_minute=0, participants_per_minute=0)
    with client_for(app) as c:
        pid = new_participant(c)
        with dbm.Session(app.state.engine) as s:
            sid = json.loads(s.get(dbm.Participant, pid).order_json)[0]
        yield c, pid, sid


def test_huge_integers_in_every_field_get_4xx(big_client):
    c, pid, sid = big_client
    failures = []
    for url, body in _post_routes(pid, sid):
        for field in body:
            for raw in [HUGE, "-" + HUGE, f"[{HUGE}]", f'{{"x": {HUGE}}}', HUGE + ".5", HUGE + "e5"]:
                r = c.post(url, content=_raw_body(body, field, raw), headers=JS)
                if not (400 <= r.status_code < 500 and r.json().get("detail")):
                    failures.append(f"{url} {field}={raw[:12]}…: {r.status_code} {r.text[:100]}")
        r = c.post(url, content=_raw_body(body, "extra", HUGE)[:-1] + b', "extra": ' + HUGE.encode() + b"}", headers=JS)
        if not 400 <= r.status_code < 500:
            failures.append(f"{url} extra field: {r.status_code}")
        r = c.post(url, content=HUGE.encode(), headers=JS)  # the body itself
        if not 400 <= r.status_code < 500:
            failures.append(f"{url} bare integer: {r.status_code}")
    assert not failures, "\n".join(failures)
    assert c.get(f"/api/p/{pid}/state").json()["answered"] == 0


WRONG = ["null", "true", "false", "0", "-1", "1.5", "1e400", "NaN", "Infinity", '""', '"\\ud800"', "[]", "{}", '"x"']


def test_wrong_types_and_missing_fields_get_4xx(big_client):
    c, pid, sid = big_client
    failures = []
    for url, body in _post_routes(pid, sid):
        for field in body:
            for raw in WRONG:
                r = c.post(url, content=_raw_body(body, field, raw), headers=JS)
                if r.status_code >= 500 or (r.status_code >= 400 and not r.json().get("detail")):
                    failures.append(f"{url} {field}={raw}: {r.status_code} {r.text[:100]}")
            missing = {k: v for k, v in body.items() if k != field}
            r = c.post(url, content=json.dumps(missing).encode(), headers=JS)
            if field != "response_ms" and r.status_code != 422:
                failures.append(f"{url} without {field}: {r.status_code} {r.text[:100]}")
        for raw in [b"", b"null", b'"x"', b"1", b"[]", b"{", b"\xc3\x28", b'{"a":1,"a":2}']:
            r = c.post(url, content=raw, headers=JS)
            if not 400 <= r.status_code < 500:
                failures.append(f"{url} body {raw!r}: {r.status_code}")
    assert not failures, "\n".join(failures)


def test_odd_paths_cookies_and_headers_get_4xx(big_client):
    c, pid, sid = big_client
    failures = []
    odd_ids = ["%00" * 20, "A" * 65, "A" * 5000, "%C3%A9" * 20, "%ED%A0%80" * 8, "-" * 16]
    urls = [f"/p/{x}" for x in odd_ids] + [f"/api/p/{x}/state" for x in odd_ids]
    urls += [f"/api/p/{pid}/image/{x}" for x in odd_ids] + [f"/static/{x}" for x in odd_ids]
    for url in urls:
        r = c.get(url)
        if not 400 <= r.status_code < 500:
            failures.append(f"GET {url[:40]}: {r.status_code}")
    for value in ["\u00e9" * 10, "x" * 5000, '"quoted"', "a;b", pid + "x"]:
        for name in (PARTICIPANT_COOKIE, ADMIN_COOKIE):
            cookie = {"Cookie": f"{name}={value}".encode("utf-8")}
            for method, url in [("GET", "/"), ("POST", "/api/participants"), ("GET", "/api/admin/participants")]:
                r = c.request(method, url, content=b'{"consent": true}', headers={**JS, **cookie})
                if r.status_code >= 500:
                    failures.append(f"{method} {url} cookie {name}={value[:10]}: {r.status_code}")
    for ctype in ["application/json; charset=latin-1", "APPLICATION/JSON", "application/json;;", "text/json"]:
        r = c.post("/api/participants", content=b'{"consent": true}', headers={"Content-Type": ctype})
        if r.status_code >= 500:
            failures.append(f"content-type {ctype}: {r.status_code}")
    assert not failures, "\n".join(failures)
