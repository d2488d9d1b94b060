"""The tampered-file cases of bench/faults.py (tests/faults/tamper.py), each must be survived.

Wrong implementations caught: any reader that resolves a manifest's ``import:`` spec without
``trust_code`` (the marker file appears); a checkpoint, training checkpoint or trace loaded
without checking its content hash (the flipped file loads); ``resnet20@`` read as no checkpoint.
"""

from faults.tamper import run_tamper_cases


def test_tampered_files_are_refused(tmp_path):
    cases = run_tamper_cases(tmp_path)
    assert len(cases) == 8
    failed = [c for c in cases if not c[1]]
    assert not failed, failed
