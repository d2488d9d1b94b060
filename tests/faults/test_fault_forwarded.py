"""Forwarded headers are believed only from configured proxies (issue 26, item 4): the admin
login limit holds per real client whatever ``X-Forwarded-For`` a client sends."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from overinterp.human.app import create_app  # noqa: E402

TOKEN = "forwarded-admin-token"


def _logins(app, n: int, forwarded) -> list[int]:
    with TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False) as c:
        return [
            c.post("/api/admin/login", json={"token": f"g{i}"}, headers={"X-Forwarded-For": forwarded(i)}).status_code
            for i in range(n)
        ]


def test_forwarded_for_is_ignored_unless_the_peer_is_a_configured_proxy(study):
    """Guards against: the app (or its server) taking the client address from ``X-Forwarded-For``
    sent by any peer — 30 × 401 and no 429, as the attack found."""
    out, _ = study
    codes = _logins(create_app(out, None, TOKEN), 30, lambda i: f"10.0.0.{i}")
    assert codes[:10] == [401] * 10 and 429 in codes[:11], codes


def test_a_configured_proxy_forwards_the_client_address(study):
    """Guards against: --forwarded-allow-ips accepted but not applied (all clients behind the
    proxy then share one limit), or applied to peers that are not the proxy."""
    out, _ = study
    app = create_app(out, None, TOKEN, forwarded_allow_ips="127.0.0.1")
    assert _logins(app, 30, lambda i: f"10.0.0.{i}") == [401] * 30  # 30 clients, one wrong login each
    app = create_app(out, None, TOKEN, forwarded_allow_ips="127.0.0.1")
    assert _logins(app, 11, lambda i: "10.9.9.9")[-1] == 429  # one client behind the proxy is limited
    app = create_app(out, None, TOKEN, forwarded_allow_ips="192.0.2.1")  # a proxy that is not this peer
    assert 429 in _logins(app, 11, lambda i: f"10.0.0.{i}")


def test_serve_turns_off_uvicorn_proxy_headers(study, monkeypatch):
    """Guards against: ``human serve`` leaving uvicorn's default (believe X-Forwarded-For from
    127.0.0.1), which bypasses the app's own setting."""
    uvicorn = pytest.importorskip("uvicorn")
    from overinterp.cli import main

    out, _ = study
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["human", "serve", "--study", str(out), "--admin-token", TOKEN]) == 0
    assert seen["proxy_headers"] is False
    with TestClient(seen["app"], client=("127.0.0.1", 1), raise_server_exceptions=False) as c:
        codes = [
            c.post("/api/admin/login", json={"token": "x"}, headers={"X-Forwarded-For": f"10.1.1.{i}"}).status_code
            for i in range(11)
        ]
    assert codes[-1] == 429
    argv = ["human", "serve", "--study", str(out), "--admin-token", TOKEN, "--forwarded-allow-ips", "127.0.0.1"]
    assert main(argv) == 0
    with TestClient(seen["app"], client=("127.0.0.1", 1), raise_server_exceptions=False) as c:
        codes = [
            c.post("/api/admin/login", json={"token": "x"}, headers={"X-Forwarded-For": f"10.1.1.{i}"}).status_code
            for i in range(11)
        ]
    assert codes == [401] * 11


@pytest.mark.slow
def test_real_server_limits_rotating_forwarded_addresses(study, tmp_path):
    """The attack as it was run: a real ``human serve`` (uvicorn) and 30 wrong logins from
    127.0.0.1 with rotating X-Forwarded-For: a 429 by the 11th."""
    from faults.forwarded import rotating_forwarded_logins

    out, _ = study
    codes = rotating_forwarded_logins(out, tmp_path / "server.log")
    assert codes[:10] == [401] * 10 and codes[10] == 429, codes


def test_serve_on_a_port_in_use_is_one_line(study):
    """Guards against uvicorn's exit 1 (a log line, no message of ours) when the port is taken."""
    import socket
    import subprocess
    import sys

    out, _ = study
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "overinterp", "human", "serve", "--study", str(out), "--port", str(port)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert (
        lines[-1]
        == f"overinterp human: error: the server could not listen on 127.0.0.1:{port} (the line above says why)"
    )
