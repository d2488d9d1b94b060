"""Every command line fails cleanly (issue 26, item 6): a property-based test (Hypothesis)
that walks the argparse parsers and, for every option of every command, generates values
— numbers out of range, wrong types, bad specs, missing, corrupt and unwritable paths, huge
sizes — and asserts that ``overinterp`` either succeeds or exits 2 with one error line
(the last) and no traceback.

It runs in this process (``main(argv)``, output captured). Required options get tiny good
inputs (a 3-class smallcnn, 12 images of 8×8, a 4-image job, a 2-image trace, a tiny study);
on top, one to three options per example get generated values. Options that set how much
work a valid run does (:data:`WORK`: epochs, image counts, replicates …) get invalid values
or small ones, never huge valid ones. Nothing leaves the machine: ``--download`` is never
set, ``--executor ray`` is never chosen, ``human serve`` does not start its server
(``uvicorn.run`` is replaced) and ``demo`` does not train (``run_demo`` is replaced: its
options are only parsed and validated). A run still working after :data:`BUDGET_S` seconds
has passed every check (it started work) and is stopped there.

Guards against (each was found by it or by the outside attack): options that reach the
library unvalidated and end in a traceback (``smallcnn?width=abc``, a corrupt ``.npz``,
``--port 99999``, ``--database bogus://``, ``--threads`` beyond what torch takes …), and
handlers that print an error but return 1 or print two error lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import threading
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from faults.badinputs import make_world  # noqa: E402
from overinterp.cli import build_parser, main  # noqa: E402

#: seconds an example may run before it counts as "started work" and is stopped (a backstop:
#: work-size options only take small valid values, so good runs end well within it)
BUDGET_S = 20.0
#: examples per command
EXAMPLES = int(os.environ.get("OVERINTERP_FUZZ_EXAMPLES", "6"))


class _OutOfTime(BaseException):
    """Raised in the main thread when an example has used its budget (not an ``Exception``:
    the code under test must not swallow it)."""


def _commands() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
        if not subs:
            out[" ".join(path)] = p
        for a in subs:
            for name, sp in a.choices.items():
                walk(sp, (*path, name))

    walk(build_parser(), ())
    return out


COMMANDS = _commands()

INTS = ["-1", "0", "1", "2", "abc", "", "1.5", "nan", "99999999999", "-99999999999", str(2**63), "0x10", "1e3"]
FLOATS = ["-1", "0", "0.5", "1", "1.5", "nan", "inf", "-inf", "1e309", "abc", "", "1e-320", "99999999999"]
TEXT = ["", " ", "x", "é中🙂", "a,b", "-1", "../../etc/passwd", "\x00", "x" * 300, "{w}/a-file"]
MODELS = [
    "{w}/small.pt",
    "smallcnn?width=-1",
    "smallcnn?width=abc",
    "smallcnn?width=99999999999",
    "smallcnn?bogus=1",
    "import:os:system",
    "import:os:getcwd",
    "resnet20@",
    "bogus",
    "{w}/corrupt.npz",
    "{w}/missing.pt",
    "onnx:{w}/good.npz",
    "smallcnn?num_classes=0",
]
DATA = [
    "{w}/good.npz",
    "{w}/corrupt.npz",
    "{w}/missing.npz",
    "{w}/labels99.npz",
    "{w}/label-2e40.npz",
    "{w}/nan-images.pt",
    "{w}/pickled.pt",
    "{w}/a-folder",
    "{w}/a-file",
    "cifar10:test@{w}/nowhere",
    "bogus:spec",
    "folder:{w}/nowhere",
]
PATHS_IN = ["{w}/missing", "{w}/a-folder", "{w}/a-file", "{w}/corrupt.npz", "{w}/good.npz", "/proc/version", ""]
PATHS_OUT = ["{out}", "/proc/x/y", "{w}/a-file", "{w}/a-folder", "", "/dev/null/x", "{w}/a-file/x"]
DATABASES = ["bogus://", "sqlite:///{w}/missing.sqlite", "postgresql://u@127.0.0.1:1/x", "sqlite://", "", "x"]

#: option dest → the good value required options get (``{w}``: the world, ``{out}``: a fresh path)
GOOD = {
    "model": "{w}/small.pt",
    "model_spec": "{w}/small.pt",
    "images": "{w}/good.npz",
    "data": "{w}/good.npz",
    "dataset": "{w}/good.npz",
    "out": "{out}",
    "arch": "smallcnn",
    "trace": "{w}/trace-good.pt",
    "job": "{w}/job",
    "train_job": "{w}/job",
    "test_job": "{w}/job",
    "jobs": "{w}/job",
    "job_a": "{w}/job",
    "job_b": "{w}/job",
    "results": "{w}/results-good.csv",
    "checkpoints": "{w}/small.pt",
    "study": "{w}/study",
    "run_dir": "{w}/run-good",
    "tflite": "{w}/missing.tflite",
    "image": "{w}/missing.png",
}
#: options that make a good run tiny (set unless the example sets them)
TINY = {
    "--limit": "4",
    "--epochs": "1",
    "--images": "2",
    "--num-images": "1",
    "--recipe": "fast",
    "--no-progress": None,
    "--budget": "5s",
    "--method": "kstep",
}
#: options that set the amount of work of a valid run: invalid or small values only
WORK = {
    "epochs", "replicates", "num_images", "scan", "images", "per_class", "max_model_images", "limit",
    "test_limit", "subset", "eval_every", "panels", "warmup_epochs", "sample", "superpixels", "seeds",
}  # fmt: skip
SMALL_INTS = ["-1", "0", "abc", "", "1.5", "nan", "1", "2", "3", "-99999999999", "0x10"]
#: positionals and options whose good value is a list
LISTS = {"checkpoints", "jobs", "model"}


def _values(action: argparse.Action) -> st.SearchStrategy[str]:
    """Generated values for one option, good and hostile."""
    dest, kind = action.dest, getattr(action.type, "__name__", "")
    if action.choices is not None:
        choices = [str(c) for c in action.choices if c != "ray"]
        return st.sampled_from([*choices, "bogus", ""])
    if dest in ("model", "model_spec", "robust_model", "checkpoints"):
        return st.sampled_from(MODELS)
    if dest in ("images", "data", "dataset", "test_data") and kind != "positive_int":
        return st.sampled_from(DATA)
    if dest == "database":
        return st.sampled_from(DATABASES)
    if kind in ("output_file", "output_dir", "_audit_dir"):
        return st.sampled_from(PATHS_OUT)
    if dest in WORK:
        return st.sampled_from(SMALL_INTS if kind != "_duration" else ["1s", "0s", "-1s", "abc", "nan"])
    if kind in ("positive_int", "nonnegative_int", "int", "port", "thread_count"):
        return st.one_of(st.sampled_from(INTS), st.integers(-(10**15), 10**15).map(str))
    if kind in ("fraction", "positive_float", "nonnegative_float", "finite_float", "_dropout_rate"):
        return st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if kind in ("floats", "ints"):
        return st.sampled_from(["0.1,0.2", "1,2,3", "", "a,b", "nan", "-1,2", "1e309", ",,,"])
    if kind == "_duration":
        return st.sampled_from(["5s", "1m", "0s", "-1s", "abc", "", "99999999999h", "nan"])
    if kind == "Path" or dest in GOOD:
        return st.sampled_from(PATHS_IN + [GOOD.get(dest, "{w}/missing")])
    return st.sampled_from(TEXT)


def _optionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = {"help", "download", "executor", "address"}
    return [
        a
        for a in parser._actions  # noqa: SLF001
        if a.option_strings and a.dest not in skip and not isinstance(a, argparse._HelpAction)  # noqa: SLF001
    ]


def _base_argv(name: str, parser: argparse.ArgumentParser, chosen: dict[str, str | None]) -> list[str]:
    """The command with good values for what it requires, tiny options, then ``chosen``."""
    argv = name.split()
    for a in parser._actions:  # noqa: SLF001
        if a.option_strings or isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
            continue
        value = chosen.pop(a.dest, None) or GOOD.get(a.dest, "{w}/missing")
        argv.append(value)
    flags = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001
    given = set(chosen)
    for a in parser._actions:  # noqa: SLF001
        if a.option_strings and a.required and a.option_strings[-1] not in given:
            argv += [a.option_strings[-1], GOOD.get(a.dest, "{w}/missing")]
    for flag, value in TINY.items():
        if flag in flags and flag not in given and flag not in argv:
            argv += [flag] if value is None else [flag, value]
    for flag, value in chosen.items():
        argv += [flag] if value is None else [flag, value]
    return argv


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """make_world's inputs plus a finished 4-image job, a trace, a results file, a study."""
    # modules imported lazily on the way: imported here, so a run stopped by the budget never leaves one half-imported
    import matplotlib.pyplot  # noqa: F401
    import scipy.stats  # noqa: F401
    import sympy.logic.boolalg  # noqa: F401

    import overinterp.report  # noqa: F401

    w = make_world(tmp_path_factory.mktemp("fuzz-world"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = ["--model", str(w / "small.pt"), "--no-progress"]
        job = ["backselect-dataset", *model, "--dataset", str(w / "good.npz"), "--limit", "4", "--method", "exact"]
        assert main([*job, "--out", str(w / "job")]) == 0
        assert main(["backselect", *model, "--images", str(w / "good.npz"), "--limit", "2"] + [
            "--out", str(w / "trace-good.pt")
        ]) == 0  # fmt: skip
        assert (
            main(["evaluate", *model, "--dataset", str(w / "good.npz"), "--results", str(w / "results-good.csv")]) == 0
        )
    (w / "run-good").mkdir()
    (w / "run-good" / "results.csv").write_bytes((w / "results-good.csv").read_bytes())
    try:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "human"))
        from humankit import build_tiny_study

        build_tiny_study(w / "study")
    except ImportError:
        pass
    return w


def _run(argv: list[str]) -> tuple[int | None, str]:
    """``main(argv)`` here, stopped after :data:`BUDGET_S` s: (exit code or None when stopped, stderr)."""
    err = io.StringIO()

    def out_of_time(*_):
        raise _OutOfTime

    old = signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, BUDGET_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc: int | None = main(argv)
            except _OutOfTime:
                rc = None
            except SystemExit as exc:  # main returns codes: an escaping SystemExit is a defect
                rc = -1
                err.write(f"\nSystemExit escaped main: {exc.code!r}\n")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return rc, err.getvalue()


def _problems(rc: int | None, err: str, command: str) -> list[str]:
    if rc is None or rc == 0 or (rc == 1 and command == "job-status"):
        return []
    problems = []
    if rc != 2:
        problems.append(f"exit code {rc}")
    if "Traceback" in err:
        problems.append("a traceback")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    if len(errors) != 1 or not lines or lines[-1] != errors[0]:
        problems.append(f"{len(errors)} error lines, or not the last line")
    return problems


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs SIGALRM")
@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("OVERINTERP_FUZZ_SEED_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_command_line_succeeds_or_fails_in_one_line(world, command, data, monkeypatch, tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    import overinterp.experiments.demo as demo

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)  # relative outputs land in the scratch folder, never the checkout
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: None)
    parser = COMMANDS[command]
    options = _optionals(parser)
    positionals = [a for a in parser._actions if not a.option_strings]  # noqa: SLF001
    chosen: dict[str, str | None] = {}
    if options:
        for a in data.draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique_by=lambda a: a.dest)):
            chosen[a.option_strings[-1]] = None if a.nargs == 0 else data.draw(_values(a), label=a.dest)
    if positionals and data.draw(st.booleans(), label="fuzz a positional"):
        a = data.draw(st.sampled_from(positionals))
        chosen[a.dest] = data.draw(_values(a), label=a.dest) or "{w}/missing"
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    argv = [s.replace("{w}", str(world)).replace("{out}", str(out)) for s in _base_argv(command, parser, chosen)]
    rc, err = _run(argv)
    problems = _problems(rc, err, command)
    assert not problems, f"overinterp {' '.join(argv)}\n-> {problems}\n{err[-3000:]}"
