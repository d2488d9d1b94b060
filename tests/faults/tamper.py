"""Tampered files from outside (issue 26, items 1–2), shared by tests/faults/test_fault_tamper.py
and bench/faults.py: a run folder whose manifest names code, and files with one flipped bit.

Each case returns ``(name, survived, detail)``: survived means no command ran the named code
(the marker file a ``touch`` would create is absent) or the corrupt file was refused with an
error naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import torch

__all__ = ["flip_largest_record", "run_tamper_cases"]


def flip_largest_record(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor storage of a ``torch.save`` zip."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _cli(argv: list[str]) -> tuple[int, str]:
    from overinterp.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException as exc:  # noqa: BLE001 - a traceback is a finding, not a crash of the suite
            return 99, f"{type(exc).__name__}: {exc}"
    return rc, err.getvalue().strip()


def run_tamper_cases(root: Path) -> list[tuple[str, bool, str]]:
    """Build a tiny finished job in ``root``, then attack every reader; returns the cases."""
    import overinterp
    from jobkit import make_spec, write_dataset, write_model
    from overinterp.jobs import run_job
    from overinterp.jobs.shard import ShardTask, run_shard
    from overinterp.training.trainer import make_config, train_classifier

    cases: list[tuple[str, bool, str]] = []
    model, data = write_model(root / "m.pt"), write_dataset(root / "d.npz", n=4)
    run_job(make_spec(model, data, n=4, method=overinterp.KStep(16)), root / "job", progress=False, log=lambda _: None)

    # 1. a shared run folder whose manifest names code
    pwned = root / "pwned"
    run = root / "run"
    shutil.copytree(root / "job", run / "job")
    manifest = json.loads((run / "job" / "manifest.json").read_text())
    manifest["spec"]["model"] = {"name": "import:subprocess:getoutput", "options": {"cmd": f"touch {pwned}"}}
    (run / "job" / "manifest.json").write_text(json.dumps(manifest))
    attacks = {
        "report": ["report", str(run), "--out", str(root / "rep")],
        "subsets evaluate": ["subsets", "evaluate", "--job", str(run / "job")],
        "human build": ["human", "build", "--out", str(root / "study"), "--model", "m", str(run / "job")],
    }
    for name, argv in attacks.items():
        rc, err = _cli(argv)
        cases.append((f"manifest names code: {name}", not pwned.exists() and rc != 99, f"exit {rc}"))
        pwned.unlink(missing_ok=True)
    try:
        run_shard(ShardTask(manifest["spec"], 0, str(root / "w"), "0" * 16, "0" * 16))
        detail = "ran"
    except ValueError as exc:
        detail = str(exc).split(";")[0][:60]
    cases.append(("manifest names code: worker (run_shard)", not pwned.exists(), detail))

    # 2. one flipped bit
    flipped = root / "flip.pt"
    shutil.copy(model, flipped)
    flip_largest_record(flipped)
    rc, err = _cli(["evaluate", "--model", str(flipped), "--dataset", f"{data}:test"])
    cases.append(("flipped bit: checkpoint", rc == 2 and "corrupt" in err and str(flipped) in err, f"exit {rc}"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 255, (12, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(12) % 3
    config = make_config("paper", arch="smallcnn", arch_kwargs={"width": 4}, epochs=2, batch_size=6, milestones=(1,))
    train_classifier(config, (x, y), None, root / "train", progress=False)
    flip_largest_record(root / "train" / "checkpoint.pt")
    try:
        train_classifier(config, (x, y), None, root / "train", progress=False)
        ok, detail = False, "resumed"
    except ValueError as exc:
        ok, detail = "corrupt" in str(exc), "refused"
    cases.append(("flipped bit: training checkpoint.pt resume", ok, detail))
    trace = next((root / "job" / "shards").glob("shard-*.pt"))
    flip_largest_record(trace)
    try:
        overinterp.BackselectTrace.load(trace)
        ok, detail = False, "loaded"
    except ValueError as exc:
        ok, detail = "corrupt" in str(exc), "refused"
    cases.append(("flipped bit: trace", ok, detail))

    # 3. an empty checkpoint in a spec
    rc, err = _cli(["evaluate", "--model", "resnet20@", "--dataset", f"{data}:test"])
    cases.append(("spec resnet20@ (empty checkpoint)", rc == 2 and "nothing after '@'" in err, f"exit {rc}"))
    return cases
