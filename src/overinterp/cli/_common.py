"""Options several commands share, and turning them into library objects."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from overinterp.data.specs import FORMS as DATASET_FORMS

__all__ = [
    "Subparsers",
    "DATASET_HELP",
    "MODEL_HELP",
    "floats",
    "ints",
    "positive_int",
    "nonnegative_int",
    "port",
    "image_side",
    "thread_count",
    "positive_float",
    "nonnegative_float",
    "finite_float",
    "fraction",
    "device_name",
    "output_file",
    "output_dir",
    "add_model_options",
    "model_spec",
    "add_method_options",
    "method_from_args",
    "add_device",
    "device",
    "add_threads",
    "apply_threads",
    "add_progress",
    "progress",
    "add_executor_options",
    "executor",
]

Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]

DATASET_HELP = f"dataset spec: {DATASET_FORMS} (docs/how-to/datasets.md)"
MODEL_HELP = (
    "model spec: a registry name (`overinterp models`) [@CKPT], an overinterp checkpoint, an ensemble "
    ".json, robustbench:NAME, import:pkg.module:Class[@CKPT], or a TorchScript, torch.export (.pt2), ONNX "
    "or TFLite file (format detected from the file; FORMAT:PATH names it), with [LABEL=] and [?key=value&…]. "
    "A model file's options are its input contract: range=LO:HI (what [0,1] pixels become; default 0:1, "
    "int8/uint8 inputs: their quantisation's range), mean=…&std=… (then (v-mean)/std per channel), "
    "layout=nchw|nhwc, size=HxW, resize=none|bilinear|nearest, outputs=logits|probs|auto, e.g. "
    "model.tflite?range=0:255&outputs=probs; ONNX and TFLite are forward-only (exact, kstep, screened, "
    "adaptive --head kstep) (docs/how-to/model-formats.md)"
)


def floats(text: str) -> list[float]:
    """``"0.1,0.2"`` → ``[0.1, 0.2]`` (an argparse ``type``)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    """``"60,120"`` → ``(60, 120)`` (an argparse ``type``)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r} (not a finite number)")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (an argparse ``type``: limits, batch sizes, thread counts …)."""
    value = _number(text, int, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (an argparse ``type``)."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


#: the most threads --threads takes (torch crashes, not errs, on some larger counts)
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    """A thread count, 1 to :data:`MAX_THREADS` (an argparse ``type``)."""
    value = _number(text, int, f"an integer 1-{MAX_THREADS}")
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"must be an integer 1-{MAX_THREADS} (this machine has {os.cpu_count()} CPUs), got {value}"
        )
    return value


#: the largest image side --crop/--resize take (a 4096² RGB image is 50 MB as uint8)
MAX_SIDE = 4096


def image_side(text: str) -> int:
    """An image side in pixels, 1 to :data:`MAX_SIDE` (an argparse ``type``)."""
    value = _number(text, int, f"an integer 1-{MAX_SIDE}")
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be an image side of 1-{MAX_SIDE} pixels, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 1-65535 (an argparse ``type``)."""
    value = _number(text, int, "a port number 1-65535")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def finite_float(text: str) -> float:
    """A finite number: ``nan`` and ``inf`` are refused (an argparse ``type``)."""
    return _number(text, float, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0 (an argparse ``type``)."""
    value = _number(text, float, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (an argparse ``type``)."""
    value = _number(text, float, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (an argparse ``type``: thresholds, confidences, pixel fractions)."""
    value = _number(text, float, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def device_name(text: str) -> str:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``; an argparse ``type``)."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (use cpu, cuda, cuda:N or mps)") from None
    return text


def _writable_parent(path: Path) -> None:
    """Refuse ``path`` unless a file can be created in its nearest existing folder (tried with a
    temporary file, removed at once: permissions alone do not tell — root, read-only mounts, /proc)."""
    import tempfile

    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is None:
        return
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".overinterp-write-check.", dir=parent)
    except OSError as exc:
        why = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc)).lower()
        raise argparse.ArgumentTypeError(f"cannot write under {parent}: {why}") from None
    os.close(fd)
    os.unlink(probe)


def output_file(text: str) -> Path:
    """A file to write (an argparse ``type``): not an existing folder, under a writable folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    _writable_parent(path)
    return path


def output_dir(text: str) -> Path:
    """A folder to write into (an argparse ``type``): not an existing file, writable."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty one")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    _writable_parent(path / "x")
    return path


def check_batch_size(batch_size: int | None, image_shape: Sequence[int]) -> None:
    """Refuse a --batch-size whose candidate buffer (``batch_size`` images of ``image_shape``,
    float32, with its masked copy) would not fit in this machine's memory — before allocating it."""
    from overinterp._memory import check_fits

    if batch_size:
        check_fits(
            2 * 4 * batch_size * math.prod(int(d) for d in image_shape),
            f"--batch-size {batch_size} (candidate images of {tuple(int(d) for d in image_shape)})",
        )


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device, refused (a user error) when this machine has no such device."""
    from overinterp.models.predict import available_device

    return available_device(name)


# --------------------------------------------------------------------------- models


def add_model_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--model SPEC with --checkpoint, --preprocessing and --num-classes."""
    p.add_argument("--model", required=required, help=MODEL_HELP)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="weights file for a registry --model (public CIFAR ResNet checkpoints or overinterp's own)",
    )
    p.add_argument("--preprocessing", help="normalisation for checkpoints that record none: imagenet, cifar10, none")
    p.add_argument("--num-classes", type=positive_int, help="number of classes of a registry --model")
    add_pretrained(p)


def add_pretrained(p: argparse.ArgumentParser) -> None:
    """--pretrained: the registry model's public release weights."""
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="a registry model with its public release weights (resnet20: CIFAR-10), from a local copy "
        "($OVERINTERP_PRETRAINED_DIR), the torch hub cache, or downloaded there; sha256 checked",
    )


def model_spec(args: argparse.Namespace):
    """The :class:`~overinterp.models.ModelSpec` of the model options."""
    from overinterp.models import parse_model_spec

    return parse_model_spec(  # typed by the user: an import: spec may run the code it names
        args.model,
        checkpoint=args.checkpoint,
        preprocessing=args.preprocessing,
        num_classes=args.num_classes,
        trust_code=True,
        pretrained=getattr(args, "pretrained", False),
    )


def add_trust_code(p: argparse.ArgumentParser) -> None:
    """--trust-code: model specs read from the run folders this command opens may run code."""
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let an import: model spec read from a job manifest import and run the code it names "
        "(only for folders you trust: code named by files is never run without this)",
    )


# --------------------------------------------------------------------------- methods


def _param_type(spec):
    """An argparse ``type`` for one declared method parameter: its type and bounds."""

    def convert(text: str):
        value = _number(text, spec.type, spec.bounds_text()) if spec.type in (int, float) else spec.type(text)
        if not spec.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {spec.bounds_text()}, got {text}")
        return value

    convert.__name__ = spec.bounds_text()  # argparse names the type in its messages
    return convert


def method_options() -> dict[str, tuple[str, dict[str, Any]]]:
    """Method flag → ``(dest, add_argument keywords)``, generated from the registered methods'
    declared parameters (:meth:`overinterp.sis.methods.Method.param_specs`); a flag shared by
    several methods (``--k``) gets one help naming each method's default."""
    from overinterp.sis.methods import method_classes

    by_flag: dict[str, list] = {}
    for name, cls in method_classes().items():
        for spec in cls.param_specs():
            if spec.cli:
                by_flag.setdefault(spec.option, []).append((name, spec))
    options: dict[str, tuple[str, dict[str, Any]]] = {}
    for flag, uses in by_flag.items():
        first = uses[0][1]
        groups: dict[str, list] = {}
        for name, spec in uses:
            groups.setdefault(spec.help, []).append((name, spec))
        parts = []
        for text, members in groups.items():
            names = ", ".join(n for n, _ in members)
            defaults = {repr(sp.default) for _, sp in members if sp.has_default}
            if len(defaults) == 1:
                dflt = f" (default {members[0][1].default})"
            else:
                dflt = " (default " + ", ".join(f"{n} {sp.default}" for n, sp in members if sp.has_default) + ")"
            parts.append(f"{names}: {text}{dflt}")
        kw: dict[str, Any] = {"help": "; ".join(parts).replace("%", "%%")}
        if first.choices:
            kw["choices"] = list(first.choices)
        else:
            kw["type"] = _param_type(first)
        options[flag] = (first.name, kw)
    return options


def __getattr__(name: str):
    if name == "_METHOD_OPTIONS":  # the former hand-written table's name (cli/audit.py reads it)
        return method_options()
    raise AttributeError(name)


def _method_classes() -> dict[str, type]:
    from overinterp.sis.methods import method_classes

    return method_classes()


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def add_method_options(
    p: argparse.ArgumentParser, *, names: Sequence[str] | None = None, default: str = "exact"
) -> None:
    """--method (choices: the registered methods, or ``names`` of them) and its parameters,
    all generated from the methods' declarations."""
    from overinterp.sis.methods import method_names

    choices = [n for n in method_names() if names is None or n in names]
    classes = _method_classes()
    summaries = "; ".join(f"{n}: {classes[n].summary}" for n in choices if classes[n].summary)
    p.add_argument(
        "--method",
        default=default,
        choices=choices,
        help=(f"backward-selection method (default {default}): {summaries}").replace("%", "%%"),
    )
    for flag, (dest, kw) in method_options().items():
        if any(dest in _fields(classes[n]) for n in choices):
            p.add_argument(flag, dest=dest, default=None, **kw)


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def method_from_args(args: argparse.Namespace, num_features: int | None = None):
    """The method of the method options, built by :func:`overinterp.sis.methods.make_method`.

    An option the chosen method does not take is an error naming the methods that
    take it; ``k`` is checked against ``num_features`` when given.
    """
    from overinterp.sis.methods import make_method

    classes = _method_classes()
    fields = _fields(classes[args.method])
    params: dict[str, Any] = {}
    for flag, (dest, _) in method_options().items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest not in fields:
            takers = [n for n, c in classes.items() if dest in _fields(c)]
            raise ValueError(f"{flag} applies to --method {_either(takers)} only")
        params[dest] = value
    method = make_method(args.method, **params)
    if "k" in fields and num_features is not None:
        from overinterp.sis.methods.base import check_block_size

        check_block_size(method.k, num_features)  # type: ignore[attr-defined]
    return method


# --------------------------------------------------------------------------- runtime


def add_device(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--device (``None``: cuda when available, else cpu)."""
    p.add_argument(
        "--device",
        type=device_name,
        default=default,
        help=f"torch device (default: {default or 'cuda when available, else cpu'})",
    )


def device(args: argparse.Namespace) -> str:
    """--device (refused when this machine lacks it), or cuda when available, else cpu."""
    if args.device:
        check_device(args.device)
        return args.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_threads(p: argparse.ArgumentParser, help: str = "CPU threads for torch") -> None:
    p.add_argument("--threads", type=thread_count, help=help)


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(--threads)`` when given."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def progress(args: argparse.Namespace) -> bool:
    return not args.no_progress


# --------------------------------------------------------------------------- executors


def add_executor_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, task: str = "task") -> None:
    """--executor local|ray and the Ray options."""
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help=f"local: one {task} after another here; ray: parallel Ray tasks (pip install 'overinterp[ray]')",
    )
    p.add_argument(
        "--address", help="ray: cluster address (auto, ray://HOST:10001); default $RAY_ADDRESS or a local one"
    )
    p.add_argument(
        "--cpus-per-task", type=positive_float, default=1.0, help=f"ray: CPUs each {task} requests (default 1)"
    )
    p.add_argument(
        "--gpus-per-task",
        type=nonnegative_float,
        default=0.0,
        help=f"ray: GPUs each {task} requests, fractions allowed (e.g. 0.5; default 0)",
    )
    p.add_argument(
        "--max-retries", type=nonnegative_int, default=3, help=f"ray: retries of a failed {task} (default 3)"
    )


def executor(args: argparse.Namespace):
    """The executor the executor options name."""
    from overinterp.jobs import get_executor

    if args.executor == "local":
        return get_executor("local")
    return get_executor(
        "ray",
        address=args.address,
        num_cpus=args.cpus_per_task,
        num_gpus=args.gpus_per_task,
        max_retries=args.max_retries,
    )
