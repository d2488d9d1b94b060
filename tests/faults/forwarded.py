"""Issue 26 item 4: wrong admin logins from one client, each with a different
``X-Forwarded-For``, against a real ``overinterp human serve`` (uvicorn believes forwarded
headers from 127.0.0.1 unless told otherwise). Shared by tests/faults/test_fault_forwarded.py
and bench/faults.py; import as ``faults.forwarded``."""

from __future__ import annotations

from pathlib import Path

from faults.serverkill import _Server, free_port

__all__ = ["rotating_forwarded_logins"]


def rotating_forwarded_logins(study: Path, log: Path, attempts: int = 30, extra: list[str] | None = None) -> list[int]:
    """Status codes of ``attempts`` wrong logins from 127.0.0.1, the i-th claiming to be 10.0.i/256.i%256."""
    import httpx

    server = _Server(study, free_port(), log, list(extra or []))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/admin/login"
        with httpx.Client(timeout=10) as client:
            return [
                client.post(
                    url, json={"token": f"guess-{i}"}, headers={"X-Forwarded-For": f"10.0.{i // 256}.{i % 256}"}
                ).status_code
                for i in range(attempts)
            ]
    finally:
        server.stop()
