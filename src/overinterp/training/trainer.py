"""Train CIFAR-style classifiers the way the paper did, with checkpoints and exact resume.

:func:`train_classifier` trains a registered architecture on labelled images
(:class:`~overinterp.data.LabeledImages`, uint8 or float) into a run folder:

* ``config.json`` — the hyperparameters (:class:`TrainConfig`), the data's
  fingerprint, the software;
* ``metrics.jsonl`` — one JSON line per epoch (lr, train loss/accuracy, test
  loss/accuracy, seconds, images/s);
* ``checkpoint.pt`` — written atomically after every epoch: an overinterp
  checkpoint (``create_model(checkpoint=…)`` loads it) whose ``extra`` also
  holds the optimizer state, the random generators and the epoch, so a run
  killed at any moment resumes from its last finished epoch and ends with the
  *same* weights as an uninterrupted run (bit for bit on the same machine and
  thread count);
* ``model.pt`` — the final model (no optimizer state).

**Recipes** (:data:`RECIPES`). ``paper`` (the default) is the paper's: SGD with
Nesterov momentum 0.9, weight decay 5e-4 on every parameter, batch 128,
learning rate 0.1 divided by 5 after epochs 60, 120 and 160, 200 epochs, random
crop (zero padding 4) and horizontal flip, per-channel normalisation (CIFAR-10
mean/std). ``fast`` is for small hardware: 4 epochs, batch 256, a one-cycle
schedule (linear warm-up over 2 epochs from 0.02 to 0.2, then linear decay to
0), label smoothing 0.1 — ResNet20 reached 77.4% on the 10,000 JPEG CIFAR-10
test images after 9 minutes on one CPU thread (docs/how-to/training.md). Any field can be
overridden.

``input_dropout`` (default 0: off) is the input-dropout mitigation: each
training image gets an independent Bernoulli mask per step, and dropped pixels
(all channels together) take the model's baseline — after augmentation and any
pixel-subset masking (:func:`~overinterp.models.dropout.pixel_dropout`).

Every random draw (initial weights, shuffling, augmentation, input dropout)
comes from generators seeded by ``seed``; replicates differ only by it. On a GPU the
model trains in bfloat16 autocast with channels-last tensors, and the uint8
training set is kept on the device when it fits (bfloat16 autocast; float16
with loss scaling on GPUs without bfloat16).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from overinterp._atomic import atomic_write_text
from overinterp.data.augment import random_crop_flip
from overinterp.data.base import LabeledImages, to_pixels
from overinterp.data.fingerprint import data_fingerprint
from overinterp.data.subsets import PixelSubsets, apply_stacked
from overinterp.models.classifier import Classifier, resolve_baseline
from overinterp.models.dropout import check_dropout_rate, pixel_dropout
from overinterp.models.predict import check_finite_images, check_labels, probe_model
from overinterp.training.evaluation import evaluate_accuracy

__all__ = [
    "TrainConfig",
    "RECIPES",
    "make_config",
    "TrainResult",
    "train_classifier",
    "learning_rate",
    "data_fingerprint",
    "channel_stats",
]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
SCHEDULES = ("multistep", "onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters: everything that changes what a run computes.

    (Runtime choices — device, AMP, threads, progress — are arguments of
    :func:`train_classifier`, not hyperparameters.)
    """

    arch: str = "resnet20"
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: preset name ("cifar10", "imagenet", "none"), {"mean": …, "std": …}, or "auto"
    #: (per-channel mean/std of the training images).
    preprocessing: Any = "cifar10"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    #: the paper decays every parameter (SGD's weight_decay); False exempts biases and norm layers
    decay_norm_and_bias: bool = True
    #: "multistep" (× gamma after each milestone epoch), "onecycle", "cosine", "constant"
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (60, 120, 160)
    gamma: float = 0.2
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    #: input dropout (a mitigation, paper §4.4): the probability that a training pixel (all its
    #: channels) is replaced by the model's baseline, an independent draw per image and step; 0 = off
    input_dropout: float = 0.0
    drop_last: bool = False
    seed: int = 0
    recipe: str = "paper"
    #: fine-tuning: start from this checkpoint's weights (any file ``create_model(arch,
    #: checkpoint=…)`` loads, e.g. the public pretrained ResNet20) instead of a random draw
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "warmup_epochs", "label_smoothing"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {self.lr}, "
                f"{self.weight_decay}, {self.momentum}"
            )
        if self.crop_padding < 0 or not 0 <= self.label_smoothing < 1 or self.warmup_epochs < 0:
            raise ValueError("crop_padding, warmup_epochs must be >= 0 and label_smoothing in [0, 1)")
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        object.__setattr__(self, "input_dropout", check_dropout_rate(self.input_dropout, "input_dropout"))
        if self.init_checkpoint is not None:
            if not isinstance(self.init_checkpoint, (str, os.PathLike)) or not str(self.init_checkpoint):
                raise ValueError(f"init_checkpoint must be a file path or None, got {self.init_checkpoint!r}")
            object.__setattr__(self, "init_checkpoint", str(self.init_checkpoint))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return json.loads(json.dumps(d))  # plain JSON types only

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


#: Named recipes; :func:`make_config` starts from one and applies overrides.
RECIPES: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "fast": TrainConfig(
        epochs=4,
        batch_size=256,
        lr=0.2,
        schedule="onecycle",
        warmup_epochs=2.0,
        label_smoothing=0.1,
        milestones=(),
        recipe="fast",
    ),
}


def make_config(recipe: str = "paper", **overrides: Any) -> TrainConfig:
    """A recipe with some fields overridden (``None`` values are ignored)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(RECIPES[recipe], **changes)


# --------------------------------------------------------------------------- pieces


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimisation step ``step`` (0-based)."""
    epoch = step / steps_per_epoch
    total = config.epochs
    warm = config.warmup_epochs
    if config.schedule == "onecycle":
        if warm > 0 and epoch < warm:
            return config.lr * (0.1 + 0.9 * epoch / warm)
        return config.lr * max(0.0, (total - epoch) / max(total - warm, 1e-12))
    factor = 1.0
    if warm > 0 and epoch < warm:
        factor = (step + 1) / max(1.0, warm * steps_per_epoch)
    if config.schedule == "multistep":
        done = step // steps_per_epoch  # like MultiStepLR stepped once per epoch
        return config.lr * factor * config.gamma ** sum(done >= m for m in config.milestones)
    if config.schedule == "cosine":
        progress = min(1.0, max(0.0, (epoch - warm) / max(total - warm, 1e-12)))
        return config.lr * factor * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * factor


def _fingerprint_before_0_3(images: Tensor, labels: Tensor) -> str:
    """The training-data fingerprint checkpoints recorded before :func:`data_fingerprint` became the
    one of jobs too (labels' own dtype, other header): read only, so those runs still resume."""
    h = hashlib.sha256()
    for t in (images, labels):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of pixels in ``[0, 1]``."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = to_pixels(images[start : start + chunk].to("cpu")).double()
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and rec["epoch"] <= upto:
            out.append(rec)
    return out


def _optimizer_state_cpu(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state = optimizer.state_dict()
    state["state"] = {
        k: {n: (v.detach().to("cpu") if isinstance(v, Tensor) else v) for n, v in s.items()}
        for k, s in state["state"].items()
    }
    return state


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns."""

    model: Classifier
    history: list[dict[str, Any]]
    config: TrainConfig
    out_dir: Path | None
    checkpoint: Path | None
    resumed_from: int = 0


def amp_dtype_for(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it, else float16."""
    if device.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from overinterp.models.predict import available_device

    return available_device(device)


def _as_data(data: Any, what: str) -> tuple[Tensor, Tensor, list[str] | None]:
    if isinstance(data, PixelSubsets):
        if what == "test":
            return data.pixels(), data.labels, data.classes
        return data.stacked(), data.labels, data.classes
    if isinstance(data, LabeledImages):
        return data.images, data.labels, data.classes
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        if images.dim() != 4 or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{what}: need images (N, C, H, W) and labels (N,), got {tuple(images.shape)}, {tuple(labels.shape)}"
            )
        return images, labels.long(), None
    raise TypeError(f"{what} must be LabeledImages or an (images, labels) pair, got {type(data).__name__}")


#: on a GPU, the step losses are checked for NaN / inf every this many steps (and at the end of each epoch)
_LOSS_CHECK_EVERY = 32


def _kept(epoch: int, ckpt_path: Path | None) -> str:
    if ckpt_path is not None and ckpt_path.is_file() and epoch > 1:
        return f"; {ckpt_path} still holds epoch {epoch - 1} (resumable); no model.pt was written"
    return "; no checkpoint or model.pt was written"


def _check_losses(
    losses: Tensor, first: int, last: int, epoch: int, steps: int, config: "TrainConfig", ckpt_path: Path | None
) -> None:
    """``FloatingPointError`` naming the first step of ``losses[first : last + 1]`` whose loss is NaN or infinite."""
    bad = ~torch.isfinite(losses[first : last + 1])
    if not bool(bad.any()):
        return
    i = first + int(bad.nonzero()[0, 0])
    value = float(losses[i])
    raise FloatingPointError(
        f"training {config.arch}: the loss is {value} (not finite) at epoch {epoch}, step {i + 1} of {steps} "
        f"(learning rate {learning_rate(config, (epoch - 1) * steps + i, steps):g}); training stopped"
        + _kept(epoch, ckpt_path)
        + ". Lower the learning rate (lr), or check the training images and labels"
    )


def _check_parameters(model: torch.nn.Module, epoch: int, ckpt_path: Path | None) -> None:
    """``FloatingPointError`` naming the first parameter with NaN or infinite values after an epoch."""
    named = [(k, p) for k, p in model.named_parameters() if p.is_floating_point()]
    if not named or bool(torch.stack([p.detach().isfinite().all() for _, p in named]).all()):
        return
    name = next(k for k, p in named if not bool(p.detach().isfinite().all()))
    raise FloatingPointError(
        f"training: parameter {name} holds NaN or infinite values after epoch {epoch}; training stopped"
        + _kept(epoch, ckpt_path)
    )


def _hyperparameter_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    # a setting that a checkpoint predates had its default value then (e.g. input_dropout: 0.0)
    defaults = TrainConfig().to_dict()
    keys = sorted(set(saved) | set(current))
    old = {k: saved.get(k, defaults.get(k)) for k in keys}
    new = {k: current.get(k, defaults.get(k)) for k in keys}
    return [f"{k}: {old[k]!r} → {new[k]!r}" for k in keys if old[k] != new[k]]


def train_classifier(
    config: TrainConfig,
    train: Any,
    test: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    force: bool = False,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    data_on_device: bool | None = None,
    eval_every: int = 1,
    eval_batch_size: int = 500,
    num_classes: int | None = None,
    progress: bool = True,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``train``; evaluate on ``test`` after epochs; checkpoint to ``out_dir``.

    Args:
        config: hyperparameters (see :data:`RECIPES`, :func:`make_config`).
        train: labelled training images, uint8 (0–255) or float pixels in ``[0, 1]``,
            or :class:`~overinterp.data.subsets.PixelSubsets` (with ``augment`` the
            image and its keep-mask are cropped and flipped together, then masked).
        test: optional labelled images (or pixel subsets) for per-epoch test accuracy.
        out_dir: run folder (created); ``None`` trains without files (no resume).
        resume: continue from ``out_dir/checkpoint.pt`` if there is one.
        force: resume even if the hyperparameters or training data differ from
            the checkpoint's (the changes are recorded in ``metrics.jsonl``).
        device: default CUDA when available, else CPU.
        amp: bfloat16 autocast; default on for CUDA.
        channels_last: default on (faster on CUDA and on CPU).
        data_on_device: keep the uint8 training set on the device; default: when
            it takes under half the free device memory.
        eval_every: test every this many epochs (and after the last).
        num_classes: default: the data's class count (``classes``) or max label + 1.
        callback: ``callback(event, info)`` after each ``"step"`` (info: epoch,
            step) and ``"epoch"`` (info: the epoch's metrics), after the checkpoint.

    Returns:
        :class:`TrainResult` with the trained model in eval mode.

    Raises:
        ValueError: a checkpoint in ``out_dir`` from other hyperparameters or
            data (unless ``force``), or one with ``resume=False``.
    """
    from overinterp.models import create_model, save_checkpoint  # late: models import classifier only

    images, labels, classes = _as_data(train, "train")
    # pixel subsets: image + keep-mask channels, cropped/flipped together, then masked
    subset_fill = train.fill if isinstance(train, PixelSubsets) else None
    test_data = None if test is None else _as_data(test, "test")
    if images.shape[0] == 0:
        raise ValueError("no training images")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"training images must be uint8 or float pixels, got {images.dtype}")
    check_finite_images(images, "training images")
    if test_data is not None:
        check_finite_images(test_data[0], "test images")
    n_classes = num_classes or (len(classes) if classes else int(labels.max()) + 1)
    dev = _resolve_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp and dev.type == "cuda")
    amp_dtype = amp_dtype_for(dev) if use_amp else torch.bfloat16
    # float16 (GPUs without bfloat16) needs loss scaling; bfloat16 and float32 do not
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    use_cl = True if channels_last is None else bool(channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels

    def with_fill(fp: str) -> str:  # the masking value changes what is trained on
        fill = None if subset_fill is None else repr(subset_fill.flatten().tolist())
        return fp if fill is None else hashlib.sha256((fp + fill).encode()).hexdigest()[:16]

    fingerprint = with_fill(data_fingerprint(images, labels))  # the one dataset identity (jobs use it too)
    cfg_dict = config.to_dict()

    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    saved = None
    changes: list[str] = []
    if ckpt_path is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt_path.is_file():
            if not resume:
                raise ValueError(f"{out} already holds a run ({ckpt_path}); resume it, or choose another folder")
            from overinterp.models import load_checkpoint_file

            saved = load_checkpoint_file(ckpt_path)
            training = saved.get("extra", {}).get("training")
            if not isinstance(training, dict):
                raise ValueError(f"{ckpt_path} holds no training state (not written by train_classifier)")
            changes = _hyperparameter_changes(saved["extra"].get("config", {}), cfg_dict)
            if saved["extra"].get("data") not in (fingerprint, with_fill(_fingerprint_before_0_3(images, labels))):
                changes.append(f"training data: fingerprint {saved['extra'].get('data')} → {fingerprint}")
            if changes and not force:
                raise ValueError(
                    f"refusing to resume {out}: the checkpoint was trained with other settings — "
                    + "; ".join(changes)
                    + ". Use the same settings, another folder, or start over with force=True"
                )

    # ---- model, optimizer, generators
    torch.manual_seed(config.seed)
    if config.preprocessing == "auto" and saved is None:
        mean, std = channel_stats(train.pixels() if subset_fill is not None else images)
        preprocessing: Any = {"type": "normalize", "mean": mean, "std": std}
    else:
        preprocessing = config.preprocessing
    if saved is not None:
        model = create_model(config.arch, checkpoint=saved, **config.arch_kwargs)
    elif config.init_checkpoint is not None:
        from overinterp.models.checkpoint import is_own_checkpoint, load_checkpoint_file

        if not Path(config.init_checkpoint).is_file():
            raise FileNotFoundError(f"init_checkpoint {config.init_checkpoint} is not a file")
        init = load_checkpoint_file(config.init_checkpoint)
        # an overinterp checkpoint brings its own preprocessing; a third-party one takes the config's
        model = create_model(
            config.arch,
            checkpoint=init,
            preprocessing=None if is_own_checkpoint(init) else preprocessing,
            **config.arch_kwargs,
        )
    else:
        model = create_model(config.arch, num_classes=n_classes, preprocessing=preprocessing, **config.arch_kwargs)
        if classes:
            model.class_names = list(classes)
    model.to(dev)
    # a network that cannot take these images (too small, wrong channels) or labels beyond its classes:
    # a user error now, not a RuntimeError / IndexError inside the first step
    probe = to_pixels(images[:1].to(dev))
    if subset_fill is not None:
        probe = apply_stacked(probe, subset_fill)
    model_classes = probe_model(model, tuple(probe.shape[1:]), where="training images")
    check_labels(labels, model_classes, "training labels")
    # input dropout replaces pixels by the model's masking value (its baseline, in pixel space)
    dropout_fill = resolve_baseline(None, model, tuple(probe.shape[1:]), torch.float32, dev)
    if test_data is not None:
        check_labels(test_data[1], model_classes, "test labels")
    if use_cl:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.decay_norm_and_bias:
        groups = [{"params": params, "weight_decay": config.weight_decay}]
    else:
        groups = [
            {"params": [p for p in params if p.dim() > 1], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
        ]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    augment_gen = torch.Generator(device=dev).manual_seed(config.seed + 1)
    dropout_gen = torch.Generator(device=dev).manual_seed(config.seed + 2)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if saved is not None:
        state = saved["extra"]["training"]
        optimizer.load_state_dict(state["optimizer"])
        shuffle_gen.set_state(state["shuffle_rng"])
        augment_gen.set_state(state["augment_rng"])
        if state.get("dropout_rng") is not None:  # absent in checkpoints from before input dropout
            dropout_gen.set_state(state["dropout_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        history = _read_metrics(out / METRICS_NAME, start_epoch)
        atomic_write_text(out / METRICS_NAME, "".join(json.dumps(h) + "\n" for h in history))
        if changes:
            _append_line(out / METRICS_NAME, {"event": "forced_resume", "after_epoch": start_epoch, "changes": changes})
    if out is not None:
        atomic_write_text(
            out / CONFIG_NAME,
            json.dumps(
                {
                    "config": cfg_dict,
                    "data": fingerprint,
                    "num_train": int(images.shape[0]),
                    "num_classes": n_classes,
                    "classes": classes,
                    "device": str(dev),
                    "amp": use_amp,
                    "channels_last": use_cl,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "threads": torch.get_num_threads(),
                    "resumed_from": start_epoch,
                },
                indent=2,
            )
            + "\n",
        )

    # ---- data placement
    n = int(images.shape[0])
    if data_on_device is None:
        data_on_device = dev.type == "cpu"
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            data_on_device = images.numel() * images.element_size() < free // 2
    store_dev = dev if data_on_device else torch.device("cpu")
    x_store = images.to(store_dev)
    y_store = labels.to(store_dev)
    if store_dev.type == "cpu" and dev.type == "cuda":
        x_store, y_store = x_store.pin_memory(), y_store.pin_memory()

    steps_per_epoch = n // config.batch_size if config.drop_last else math.ceil(n / config.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training images with drop_last")
    remaining = (config.epochs - start_epoch) * steps_per_epoch
    bar = tqdm(total=max(remaining, 0), desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    run_start = time.perf_counter()
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=shuffle_gen)
            loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            step_losses = torch.empty(steps_per_epoch, device=dev, dtype=torch.float32)
            checked = 0  # steps before this one have finite losses
            for i in range(steps_per_epoch):
                step = (epoch - 1) * steps_per_epoch + i
                lr = learning_rate(config, step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                idx = order[i * config.batch_size : (i + 1) * config.batch_size].to(store_dev)
                x = to_pixels(x_store[idx].to(dev, non_blocking=True))
                y = y_store[idx].to(dev, non_blocking=True)
                if config.augment:
                    x = random_crop_flip(x, augment_gen, config.crop_padding, config.flip)
                if subset_fill is not None:
                    x = apply_stacked(x, subset_fill)
                if config.input_dropout > 0:
                    x = pixel_dropout(x, config.input_dropout, dropout_fill, dropout_gen)
                if use_cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                # stop at the first non-finite loss, before it reaches the weights or a checkpoint; on a
                # GPU the check reads the losses back every _LOSS_CHECK_EVERY steps (no sync per step)
                step_losses[i] = loss.detach()
                if dev.type == "cpu" or (i + 1) % _LOSS_CHECK_EVERY == 0 or i + 1 == steps_per_epoch:
                    _check_losses(step_losses, checked, i, epoch, steps_per_epoch, config, ckpt_path)
                    checked = i + 1
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().double() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += int(y.shape[0])
                bar.update(1)
                if callback is not None:
                    callback("step", {"epoch": epoch, "step": i})
            _check_parameters(model, epoch, ckpt_path)
            train_seconds = time.perf_counter() - t0
            stats: dict[str, Any] = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": float(loss_sum) / seen,
                "train_accuracy": float(correct) / seen,
                "images": seen,
                "train_seconds": round(train_seconds, 3),
                "images_per_second": round(seen / train_seconds, 1),
            }
            if test_data is not None and (epoch % eval_every == 0 or epoch == config.epochs):
                res = evaluate_accuracy(model, test_data[0], test_data[1], batch_size=eval_batch_size, amp=use_amp)
                stats.update({"test_loss": res["loss"], "test_accuracy": res["accuracy"], "test_n": res["n"]})
            stats["seconds"] = round(time.perf_counter() - t0, 3)
            stats["elapsed"] = round(time.perf_counter() - run_start, 3)
            history.append(stats)
            if out is not None:
                model.eval()
                save_checkpoint(
                    ckpt_path,
                    model,
                    config.arch,
                    extra={
                        "config": cfg_dict,
                        "data": fingerprint,
                        "epoch": epoch,
                        "history": history,
                        "training": {
                            "epoch": epoch,
                            "optimizer": _optimizer_state_cpu(optimizer),
                            "shuffle_rng": shuffle_gen.get_state(),
                            "augment_rng": augment_gen.get_state(),
                            "dropout_rng": dropout_gen.get_state(),
                            "torch_rng": torch.get_rng_state(),
                            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        },
                    },
                    arch_kwargs=config.arch_kwargs,
                    num_classes=n_classes,
                )
                _append_line(out / METRICS_NAME, stats)
            shown = {
                "epoch": f"{epoch}/{config.epochs}",
                "loss": f"{stats['train_loss']:.3f}",
                "acc": f"{stats['train_accuracy']:.3f}",
            }
            if "test_accuracy" in stats:
                shown["test"] = f"{stats['test_accuracy']:.3f}"
            bar.set_postfix(shown)
            if callback is not None:
                callback("epoch", stats)
    finally:
        bar.close()
        model.eval()
    if use_cl:
        model.to(memory_format=torch.contiguous_format)
    final = None
    if out is not None:
        final = out / MODEL_NAME
        save_checkpoint(
            final,
            model,
            config.arch,
            extra={
                "config": cfg_dict,
                "data": fingerprint,
                "epoch": config.epochs,
                "history": history,
            },
            arch_kwargs=config.arch_kwargs,
            num_classes=n_classes,
        )
    return TrainResult(model, history, config, out, final, start_epoch)
