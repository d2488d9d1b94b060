"""SIGKILL of a dataset job at seeded random moments, then resume: the shards are
byte-identical to an uninterrupted run's, nothing stray is left, no process survives."""

from __future__ import annotations

import pytest

from faults.jobkill import KINDS, run_job_kills

pytestmark = pytest.mark.slow


def test_killed_and_resumed_job_equals_an_uninterrupted_one(tmp_path):
    rep = run_job_kills(tmp_path, kills=5, seed=0)
    assert rep.kills == 5 and not rep.problems, rep
    assert all(rep.kinds[k] >= 1 for k in KINDS), rep.kinds  # start-up, mid-shard and mid-write kills
    assert rep.left_temporaries >= 1, rep  # a write was cut: the resume had temporaries to remove
    assert rep.shards == 8 and rep.identical_shards == 8, rep
    assert rep.manifest_equal and rep.records_equal, rep
    assert rep.stray == [] and rep.leftover_processes == 0, rep
    assert rep.survived
