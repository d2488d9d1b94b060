"""The table of bad command-line inputs (shared by tests/cli/test_bad_inputs.py and
bench/faults.py): each must be a one-line user error (exit code 2), never a traceback,
and no earlier output may be written or overwritten.

Import it as ``faults.badinputs`` (``tests/`` is on the test path).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from overinterp.models import create_model, save_checkpoint

__all__ = [
    "SENTINEL",
    "EVAL",
    "BACKSELECT",
    "TRAIN",
    "BadInput",
    "CASES",
    "make_world",
    "snapshot",
    "judge",
    "try_case",
]

SENTINEL = b"an earlier output that must survive\n"


def make_world(root: Path) -> Path:
    """Inputs good and bad in ``root``, and earlier outputs (sentinel files) that must not change."""
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)
    save_checkpoint(root / "small.pt", model, "smallcnn")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(root / "nan-weights.pt", model, "smallcnn")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    np.savez(root / "good.npz", images=images, labels=np.arange(12) % 3)
    np.savez(root / "labels99.npz", images=images[:4], labels=np.array([0, 1, 99, -1]))
    np.savez(root / "small16.npz", images=images[:2].repeat(2, 1).repeat(2, 2), labels=np.array([0, 1]))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels[2, 0, 3, 3] = float("nan")
    torch.save({"images": pixels, "labels": torch.arange(12) % 3}, root / "nan-images.pt")
    torch.save({"images": argparse.Namespace(evil=True)}, root / "pickled.pt")  # refused by weights_only
    (root / "corrupt.npz").write_bytes((root / "good.npz").read_bytes()[:300])  # truncated: not a zip
    np.savez(root / "label-2e40.npz", images=images[:4], labels=np.array([0, 1, 2, 2**40]))
    (root / "results.csv").write_bytes(SENTINEL)
    (root / "trace.pt").write_bytes(SENTINEL)
    (root / "a-file").write_bytes(SENTINEL)
    (root / "a-folder").mkdir()
    (root / "run" / "job").mkdir(parents=True)
    (root / "run" / "job" / "manifest.json").write_text('{"format": "overinterp-backselect-job", ')
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


EVAL = ["evaluate", "--model", "{w}/small.pt", "--no-progress"]
BACKSELECT = ["backselect", "--model", "{w}/small.pt", "--out", "{w}/trace.pt", "--no-progress"]
EVAL3 = ["evaluate", "--num-classes", "3", "--no-progress", "--dataset", "{w}/good.npz"]
JOB = ["backselect-dataset", "--model", "{w}/small.pt", "--method", "exact", "--out", "{w}/new-job", "--no-progress"]
TRAIN = ["train", "--arch", "smallcnn", "--recipe", "fast", "--epochs", "1", "--data", "{w}/good.npz", "--no-progress"]


@dataclass(frozen=True)
class BadInput:
    """One bad command line: ``argv`` ("{w}" is the world folder) and what the message must say."""

    argv: list[str]
    message: str
    needs_no_cuda: bool = False  # only meaningful on a machine without a GPU


CASES: dict[str, BadInput] = {
    "pickled images .pt": BadInput(BACKSELECT + ["--images", "{w}/pickled.pt"], "cannot read images"),
    "network too deep for the images": BadInput(
        ["evaluate", "--model", "vgg16_bn", "--num-classes", "3", "--dataset", "{w}/small16.npz", "--no-progress"],
        "vgg16_bn cannot classify 3×16×16 images; it needs images of at least 32×32 pixels",
    ),
    "--device cuda without a GPU": BadInput(
        EVAL + ["--dataset", "{w}/good.npz", "--device", "cuda"], "no CUDA GPU", needs_no_cuda=True
    ),
    "--device bogus": BadInput(
        EVAL + ["--dataset", "{w}/good.npz", "--device", "bogus"], "not a torch device: 'bogus'"
    ),
    "train --out an existing file": BadInput(TRAIN + ["--out", "{w}/a-file"], "a-file is a file, not a folder"),
    "evaluate --results a folder": BadInput(
        EVAL + ["--dataset", "{w}/good.npz", "--results", "{w}/a-folder"],
        "a-folder is a folder; give a file name",
    ),
    "train --lr nan": BadInput(TRAIN + ["--out", "{w}/new-run", "--lr", "nan"], "--lr: expected a finite number > 0"),
    "NaN weights": BadInput(
        ["evaluate", "--model", "{w}/nan-weights.pt", "--dataset", "{w}/good.npz", "--results", "{w}/results.csv"],
        "returned NaN logits for image 0 of 12",
    ),
    "NaN images": BadInput(
        EVAL + ["--dataset", "{w}/nan-images.pt", "--results", "{w}/results.csv"],
        "file:nan-images.pt: image 2 of 12 has NaN pixel values",
    ),
    "evaluate labels beyond the classes": BadInput(
        EVAL + ["--dataset", "{w}/labels99.npz", "--results", "{w}/results.csv"],
        "label 99 (image 2; labels out of range: -1, 99) is not a class of the model, which has 3 classes",
    ),
    "backselect labels beyond the classes": BadInput(
        BACKSELECT + ["--images", "{w}/labels99.npz"],
        "is not a class of the model, which has 3 classes",
    ),
    "backselect --limit 0": BadInput(
        BACKSELECT + ["--images", "{w}/good.npz", "--limit", "0"], "--limit: must be an integer"
    ),
    "backselect --limit -3": BadInput(
        BACKSELECT + ["--images", "{w}/good.npz", "--limit", "-3"], "must be an integer >= 1"
    ),
    "evaluate --limit 0": BadInput(
        EVAL + ["--dataset", "{w}/good.npz", "--limit", "0"], "--limit: must be an integer >= 1"
    ),
    "--batch-size 0": BadInput(
        EVAL + ["--dataset", "{w}/good.npz", "--batch-size", "0"], "--batch-size: must be an integer"
    ),
    "--threads 0": BadInput(
        BACKSELECT + ["--images", "{w}/good.npz", "--threads", "0"], "--threads: must be an integer"
    ),
    "--threshold 2": BadInput(BACKSELECT + ["--images", "{w}/good.npz", "--threshold", "2"], "must be in [0, 1]"),
    "train --epochs 0": BadInput(
        TRAIN + ["--out", "{w}/new-run", "--epochs", "0"], "--epochs: must be an integer >= 1"
    ),
    "report of a corrupt job manifest": BadInput(["report", "{w}/run"], "cannot read {w}/run/job/manifest.json"),
    # issue 26, item 7: the hostile command lines that gave tracebacks
    "model option width=-1": BadInput(
        EVAL3 + ["--model", "smallcnn?width=-1"], "model smallcnn: option width must be in [1, 65536], got -1"
    ),
    "model option width=abc": BadInput(
        EVAL3 + ["--model", "smallcnn?width=abc"], "model smallcnn: option width is an integer, got 'abc'"
    ),
    "model option width=99999999999": BadInput(
        EVAL3 + ["--model", "smallcnn?width=99999999999"], "option width must be in [1, 65536], got 99999999999"
    ),
    "model weights larger than the memory": BadInput(
        EVAL3 + ["--model", "smallcnn?width=60000"], "model smallcnn (num_classes=3, width=60000) would need 1"
    ),
    "unknown model option": BadInput(
        EVAL3 + ["--model", "smallcnn?bogus=1"], "model smallcnn has no option bogus; its options: in_channels, width"
    ),
    "import: of a function that needs arguments": BadInput(
        ["evaluate", "--model", "import:os:system", "--dataset", "{w}/good.npz"], "os:system(**{{}}) failed"
    ),
    "import: of a function that returns no model": BadInput(
        ["evaluate", "--model", "import:os:getcwd", "--dataset", "{w}/good.npz"],
        "os:getcwd returned a str, not a torch.nn.Module",
    ),
    "evaluate a corrupt .npz": BadInput(
        EVAL + ["--dataset", "{w}/corrupt.npz"], "cannot read {w}/corrupt.npz: not a valid .npz file (BadZipFile"
    ),
    "backselect a corrupt .npz": BadInput(BACKSELECT + ["--images", "{w}/corrupt.npz"], "not a valid .npz file"),
    "train with a label of 2^40": BadInput(
        TRAIN[:-3] + ["--data", "{w}/label-2e40.npz", "--out", "{w}/new-run"],
        "model smallcnn (num_classes=1099511627777) would need",
    ),
    "backselect-dataset --device cuda:7": BadInput(
        JOB + ["--dataset", "{w}/good.npz", "--device", "cuda:7"], "no CUDA GPU", needs_no_cuda=True
    ),
    "backselect-dataset labels beyond the classes": BadInput(
        JOB + ["--dataset", "{w}/labels99.npz"], "label 99 (image 2; labels out of range: -1, 99) is not a class"
    ),
    "human serve --port 99999": BadInput(
        ["human", "serve", "--study", "{w}/a-folder", "--port", "99999"], "--port: must be a port number 1-65535"
    ),
    "human export --database bogus://": BadInput(
        ["human", "export", "--study", "{w}/a-folder", "--database", "bogus://", "--out", "{w}/answers.csv"],
        "--database: 'bogus://' is not a database URL",
    ),
    # item 8: outputs checked before any work
    "backselect --out /proc/x.pt": BadInput(
        BACKSELECT[:-3] + ["--out", "/proc/x.pt", "--images", "{w}/good.npz"], "cannot write under /proc"
    ),
    "backselect --batch-size beyond the memory": BadInput(
        BACKSELECT + ["--images", "{w}/good.npz", "--batch-size", "99999999999"],
        "--batch-size 99999999999 (candidate images of (3, 8, 8)) would need 1",
    ),
    "backselect-dataset --batch-size beyond the memory": BadInput(
        JOB + ["--dataset", "{w}/good.npz", "--batch-size", "99999999999"], "--batch-size 99999999999 (candidate"
    ),
    "imagenet-sis --crop 99999999": BadInput(
        ["imagenet-sis", "--data", "{w}/a-folder", "--out", "{w}/new-sis", "--crop", "99999999"],
        "--crop: must be an image side of 1-4096 pixels",
    ),
    "a path too long for the file system": BadInput(EVAL + ["--dataset", "x" * 5000], "File name too long"),
    # minor: a folder without runs
    "report of a folder without runs": BadInput(["report", "{w}/a-folder"], "holds no runs"),
}


def judge(rc: int, err: str, message: str, before: dict[str, str], after: dict[str, str], world: Path) -> list[str]:
    """What is wrong with one refusal (empty: refused clearly): exit code 2, exactly one
    ``error:`` line and it is the last line, no traceback, ``message`` in it, and every
    file of ``world`` unchanged (``before``/``after``: :func:`snapshot`)."""
    problems = []
    if rc != 2:
        problems.append(f"exit code {rc}, not 2")
    if "Traceback" in err:
        problems.append("a traceback")
    errors = [line for line in err.splitlines() if "error:" in line]
    if len(errors) != 1 or err.rstrip().splitlines()[-1] != errors[0]:
        problems.append(f"{len(errors)} error lines, or not last: {err.strip()[-200:]!r}")
    elif message.format(w=world) not in errors[0]:
        problems.append(f"message {errors[0]!r} lacks {message.format(w=world)!r}")
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problems.append(f"files written or overwritten: {changed}")
    return problems


def try_case(world: Path, case: BadInput) -> list[str]:
    """Run ``overinterp`` in this process on ``case`` against ``world``; :func:`judge`'s problems."""
    from overinterp.cli import main

    before = snapshot(world)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main([a.format(w=world) for a in case.argv])
        except SystemExit as exc:  # main returns codes; an escaping SystemExit is itself a defect
            rc = exc.code if isinstance(exc.code, int) else 1
            err.write("SystemExit escaped main\n")
        except Exception as exc:  # noqa: BLE001 - a crash is a wrong refusal, reported as such
            rc = 1
            err.write(f"Traceback (escaped main): {type(exc).__name__}: {exc}\n")
    return judge(rc, err.getvalue(), case.message, before, snapshot(world), world)
