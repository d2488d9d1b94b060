"""SIGKILL of the study web server while participants answer concurrently, restarted on the
same database: no acknowledged answer is lost, nothing unsent is stored, no 5xx."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from faults.serverkill import run_server_kills  # noqa: E402

pytestmark = pytest.mark.slow


def test_no_acknowledged_answer_is_lost(tmp_path):
    rep = run_server_kills(tmp_path, kills=2, seed=0, clients=4, participants_per_client=1)
    assert rep.kills == 2 and not rep.problems, rep
    assert rep.participants == 4 and rep.stored == 4 * 24, rep  # every participant finished after the restarts
    assert rep.lost == [] and rep.phantom == [], rep
    # every stored answer was acknowledged, or all its requests were cut by a kill after the commit
    assert rep.acknowledged + rep.stored_unacknowledged == rep.stored, rep
    assert rep.server_errors == 0 and rep.leftover_processes == 0, rep
    assert rep.survived
