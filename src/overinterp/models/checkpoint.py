"""Checkpoints: the project's own format, and third-party state dicts.

Two kinds of file are read:

* **own format** (written by :func:`save_checkpoint`): a dict with
  ``format="overinterp-checkpoint"``, ``format_version``, ``arch``,
  ``num_classes``, ``arch_kwargs``, ``preprocessing`` (the Classifier's
  :meth:`~overinterp.Classifier.preprocessing_config`), ``baseline``,
  ``class_names``, ``state_dict`` (the network's, no prefix) and ``extra``.
  It records everything needed to rebuild the Classifier. Since format version 2 it also
  carries ``content_sha256``, the hash of all of that (:func:`overinterp._atomic.seal`),
  checked on every load: one flipped byte in a weight is an :class:`IntegrityError` naming
  the file. Version-1 files (no hash) still load, with a warning that they cannot be checked.
* **third-party**: a dict with the weights under ``state_dict`` (keys possibly
  prefixed ``module.`` by ``DataParallel``), or a bare state dict. These record
  neither the architecture nor the input normalisation; the caller must give
  both (see :func:`overinterp.models.create_model`).

Everything is read with ``torch.load(..., weights_only=True)``: no code from a
checkpoint is ever executed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from overinterp._atomic import SEAL_KEY, atomic_torch_save, check_seal, seal
from overinterp.models.classifier import Classifier
from overinterp.models.registry import build_network, get_model_entry

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "load_checkpoint_file",
    "save_checkpoint",
    "is_own_checkpoint",
    "strip_key_prefixes",
    "load_state_dict_checked",
    "last_linear_name",
]

CHECKPOINT_FORMAT = "overinterp-checkpoint"
CHECKPOINT_FORMAT_VERSION = 2  # 2: content_sha256

_OWN_KEYS = (
    "arch",
    "num_classes",
    "arch_kwargs",
    "preprocessing",
    "baseline",
    "class_names",
    "state_dict",
    "extra",
)
_SHOWN = 5  # offending keys listed per kind in error messages


# --------------------------------------------------------------------------- reading


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file on the CPU, safely (``weights_only=True``).

    Returns a dict that always has a ``state_dict`` (a mapping from ``str`` to
    tensors): the file's own dict, or ``{"state_dict": …}`` around a bare state
    dict. Own-format checkpoints (see :func:`is_own_checkpoint`) are checked
    for all their fields.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file cannot be read as a weights-only PyTorch file
            (corrupt, truncated, not a checkpoint, or a pickled whole model),
            or holds no state dict, or is an own-format checkpoint with missing
            or malformed fields or from a newer format version.
        IntegrityError: (a ``ValueError``) an own-format file whose content no longer matches
            its ``content_sha256`` (corrupt), or a version-2 file without one.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    if p.is_dir():
        raise ValueError(f"checkpoint path {p} is a directory, not a file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt bytes, truncated files, disallowed pickles …
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        if len(detail) > 200:
            detail = detail[:200] + " …"
        raise ValueError(
            f"cannot read checkpoint {p}: it is not a PyTorch file that loads with "
            f"weights_only=True (corrupt or truncated, not a checkpoint, or a whole pickled "
            f"model rather than a state_dict) — {detail}"
        ) from exc
    return _validate_checkpoint(_unseal(obj, str(p), from_file=True), str(p))


def _unseal(obj: Any, source: str, *, from_file: bool) -> Any:
    """An own-format dict with its seal checked and removed (a file's: required from version 2; a
    dict given directly: checked when it has one). Other objects, and newer versions (refused by
    :func:`_validate_own`), pass through."""
    if not is_own_checkpoint(obj):
        return obj
    version = obj.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        return {k: v for k, v in obj.items() if k != SEAL_KEY}
    if not from_file and SEAL_KEY not in obj:
        return obj
    return check_seal(obj, f"checkpoint {source}", required=version >= 2)


def is_own_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is in the project's own format."""
    return isinstance(checkpoint, Mapping) and checkpoint.get("format") == CHECKPOINT_FORMAT


def _validate_checkpoint(obj: Any, source: str) -> dict[str, Any]:
    """Shared checks for a loaded file or a dict given directly."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {source} holds a {type(obj).__name__}, not a dict with a state_dict")
    if is_own_checkpoint(obj):
        return _validate_own(dict(_unseal(obj, source, from_file=False)), source)
    if "state_dict" in obj:
        state_dict = obj["state_dict"]
        _check_state_dict(state_dict, source, where="its 'state_dict'")
        out = dict(obj)
        out["state_dict"] = dict(state_dict)
        return out
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        _check_state_dict(obj, source, where="the file")
        return {"state_dict": dict(obj)}
    keys = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
    raise ValueError(
        f"checkpoint {source} has no state_dict: expected a dict with tensors under "
        f"'state_dict', or a bare state dict of tensors; its top-level keys are: {keys}"
    )


def _check_state_dict(state_dict: Any, source: str, where: str) -> None:
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(
            f"checkpoint {source}: {where} is not a non-empty dict of tensors (got {type(state_dict).__name__})"
        )
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        shown = ", ".join(repr(k) for k in bad[:_SHOWN])
        raise ValueError(
            f"checkpoint {source}: {where} is not a state dict — {len(bad)} entries are not str → tensor (e.g. {shown})"
        )


def _validate_own(ckpt: dict[str, Any], source: str) -> dict[str, Any]:
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"checkpoint {source}: format_version is missing or not an integer: {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {source} has format_version {version}, newer than this overinterp "
            f"reads ({CHECKPOINT_FORMAT_VERSION}); upgrade overinterp"
        )
    if version < 1:
        raise ValueError(f"checkpoint {source}: invalid format_version {version}")
    missing = [k for k in _OWN_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {source} ({CHECKPOINT_FORMAT}) lacks the fields: {', '.join(missing)}")
    if not isinstance(ckpt["arch"], str) or not ckpt["arch"]:
        raise ValueError(f"checkpoint {source}: 'arch' must be a non-empty string, got {ckpt['arch']!r}")
    n = ckpt["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"checkpoint {source}: 'num_classes' must be a positive integer, got {n!r}")
    if not isinstance(ckpt["arch_kwargs"], dict):
        raise ValueError(f"checkpoint {source}: 'arch_kwargs' must be a dict, got {ckpt['arch_kwargs']!r}")
    _check_preprocessing_config(ckpt["preprocessing"], source)
    names = ckpt["class_names"]
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(s, str) for s in names)):
        raise ValueError(f"checkpoint {source}: 'class_names' must be a list of strings or None")
    if names is not None and len(names) != n:
        raise ValueError(f"checkpoint {source}: {len(names)} class_names for num_classes={n}")
    if ckpt["extra"] is not None and not isinstance(ckpt["extra"], dict):
        raise ValueError(f"checkpoint {source}: 'extra' must be a dict")
    try:
        baseline = torch.as_tensor(ckpt["baseline"], dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {source}: 'baseline' is not numeric: {ckpt['baseline']!r}") from exc
    if not torch.isfinite(baseline).all():
        raise ValueError(f"checkpoint {source}: 'baseline' contains NaN or inf")
    _check_state_dict(ckpt["state_dict"], source, where="its 'state_dict'")
    ckpt["state_dict"] = dict(ckpt["state_dict"])
    return ckpt


def _check_preprocessing_config(config: Any, source: str) -> None:
    if not isinstance(config, dict) or config.get("type") not in ("identity", "normalize"):
        raise ValueError(
            f"checkpoint {source}: 'preprocessing' must be {{'type': 'identity'}} or "
            f"{{'type': 'normalize', 'mean': …, 'std': …}}, got {config!r}"
        )
    if config["type"] == "normalize":
        mean, std = config.get("mean"), config.get("std")
        ok = (
            isinstance(mean, (list, tuple))
            and isinstance(std, (list, tuple))
            and len(mean) == len(std) > 0
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in [*mean, *std])
            and all(v > 0 for v in std)
        )
        if not ok:
            raise ValueError(
                f"checkpoint {source}: malformed normalisation (need equal-length lists mean and "
                f"positive std): {config!r}"
            )


# --------------------------------------------------------------------------- state dicts


def strip_key_prefixes(state_dict: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Remove a leading prefix (e.g. ``module.`` from ``DataParallel``) from keys that have one."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if prefix and key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key in out:
            raise ValueError(f"state dict key {key!r} occurs twice once prefixes {prefixes} are removed")
        out[key] = value
    return out


def last_linear_name(network: nn.Module) -> str | None:
    """Name of the last ``nn.Linear`` sub-module (the classification head), if any."""
    name = None
    for child_name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            name = child_name
    return name


def _fit_problems(
    model_state: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches (as text) between two state dicts.

    BatchNorm's ``num_batches_tracked`` counters are not required: older
    checkpoints (like the public CIFAR ResNets) predate them.
    """
    missing = [k for k in model_state if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in model_state]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, shapes


def _describe_problems(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", … ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:_SHOWN])}{more})")
    return "; ".join(parts)


def _arch_label(arch: str, arch_kwargs: Mapping[str, Any] | None) -> str:
    if arch_kwargs:
        return f"{arch!r} with {dict(arch_kwargs)}"
    return repr(arch)


def load_state_dict_checked(
    network: nn.Module,
    state_dict: Mapping[str, Tensor],
    arch: str,
    source: str,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """``network.load_state_dict(state_dict, strict=True)`` with a readable error.

    Raises:
        ValueError: naming the architecture and the checkpoint, listing a few
            missing keys, unexpected keys and shape mismatches.
    """
    model_state = network.state_dict()
    missing, unexpected, shapes = _fit_problems(model_state, state_dict)
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {source} does not fit architecture {_arch_label(arch, arch_kwargs)}: "
            f"{_describe_problems(missing, unexpected, shapes)}. Is it the weights of another "
            "architecture (or depth, width, number of classes)?"
        )
    state = dict(state_dict)
    for key in model_state:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise ValueError(
            f"checkpoint {source} does not load into architecture {_arch_label(arch, arch_kwargs)}: {exc}"
        ) from exc


# --------------------------------------------------------------------------- writing


def _check_plain(value: Any, where: str) -> None:
    """Only values that ``torch.load(weights_only=True)`` reads back may be saved."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: dict keys must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints may only hold None, bool, int, float, "
        "str, tensors, and lists/tuples/dicts of these (they are read with weights_only=True)"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    classifier: Classifier,
    arch: str | None,
    extra: dict[str, Any] | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
) -> Path:
    """Write ``classifier`` as an own-format checkpoint, atomically.

    The file is first written to a temporary file in the same directory and
    then moved over ``path`` with :func:`os.replace`, so an interruption
    (even ``KeyboardInterrupt``) leaves either the old file or the new one,
    never a half-written one.

    Args:
        path: where to write; its directory must exist.
        classifier: a :class:`~overinterp.Classifier` whose preprocessing has a
            ``config()`` (``Normalize`` or none).
        arch: the registry name of ``classifier.network``'s architecture
            (``None``: its :attr:`~overinterp.Classifier.architecture`'s, set by :func:`create_model`).
        extra: free JSON-like metadata (training settings, accuracy, …).
        arch_kwargs: builder keyword arguments beyond ``num_classes``; default: its
            ``architecture``'s when that is ``arch``, else none.
        num_classes: default: the output size of the network's last ``nn.Linear``.

    Returns:
        The path written.

    Raises:
        TypeError: ``classifier`` is not a Classifier, or ``extra`` holds values
            that a weights-only load cannot read back.
        ValueError: unknown ``arch``, or the network does not match what
            ``arch`` with ``arch_kwargs`` builds.
        FileNotFoundError: the target directory does not exist.
    """
    if not isinstance(classifier, Classifier):
        raise TypeError(
            f"save_checkpoint needs an overinterp Classifier (network + preprocessing), got "
            f"{type(classifier).__name__}; wrap the network: Classifier(network, preprocessing=…)"
        )
    record = classifier.architecture
    if arch is None:
        if record is None:
            raise ValueError("save_checkpoint: give arch, the registry name of the network's architecture")
        arch = record.name
    get_model_entry(arch)  # unknown names: ValueError listing the known ones
    if arch_kwargs is None:
        arch_kwargs = record.kwargs if record is not None and record.name == arch else {}
    arch_kwargs = dict(arch_kwargs)
    _check_plain(arch_kwargs, "arch_kwargs")
    extra = dict(extra) if extra is not None else {}
    _check_plain(extra, "extra")

    network = classifier.network
    if num_classes is None:
        head = last_linear_name(network)
        if head is None:
            raise ValueError(
                f"save_checkpoint: cannot tell the number of classes of {type(network).__name__} "
                "(it has no nn.Linear); pass num_classes="
            )
        num_classes = int(network.get_submodule(head).out_features)

    try:
        preprocessing = classifier.preprocessing_config()
    except TypeError as exc:
        raise TypeError(f"save_checkpoint: {exc}; only Normalize (or no) preprocessing can be recorded") from exc

    state_dict = {k: v.detach().to("cpu") for k, v in network.state_dict().items()}
    reference = build_network(arch, num_classes, **arch_kwargs)
    missing, unexpected, shapes = _fit_problems(reference.state_dict(), state_dict)
    if missing or unexpected or shapes:
        raise ValueError(
            f"save_checkpoint: the classifier's network is not {_arch_label(arch, arch_kwargs)} "
            f"with num_classes={num_classes}: {_describe_problems(missing, unexpected, shapes)}"
        )

    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": arch,
        "num_classes": int(num_classes),
        "arch_kwargs": arch_kwargs,
        "preprocessing": preprocessing,
        # (C,) or (C, H, W) as nested lists; a scalar baseline stays a float.
        "baseline": classifier.baseline.detach().cpu().tolist(),
        "class_names": list(classifier.class_names) if classifier.class_names is not None else None,
        "state_dict": state_dict,
        "extra": extra,
    }
    target = Path(path)
    atomic_torch_save(seal(payload), target, make_parents=False)
    return target
