"""`Classifier`: a network with its preprocessing and its default baseline.

The input contract of every algorithm in overinterp: a *model* is either

* a plain ``nn.Module`` (or any callable) that returns logits ``(N, K)`` for the
  tensors it is given — masking then happens in that same input space and the
  default baseline is 0; or
* a :class:`Classifier`, which takes images as pixels in ``[0, 1]``, applies its
  own preprocessing (e.g. :class:`Normalize`), returns logits, and carries its
  default baseline: the dataset's mean pixel, which is 0 after normalisation
  (the paper's masking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Architecture",
    "Classifier",
    "Normalize",
    "PREPROCESSING_PRESETS",
    "make_preprocessing",
    "check_eval_mode",
    "resolve_baseline",
]

#: Named normalisations. ``imagenet`` is what the public pretrained CIFAR ResNets used.
PREPROCESSING_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "none": None,
}


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on ``(N, C, H, W)`` images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
        if not torch.all(std_t > 0):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.to(x.dtype).view(shape)) / self.std.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"

    def config(self) -> dict[str, Any]:
        """A JSON-able description, stored with checkpoints."""
        return {"type": "normalize", "mean": self.mean.tolist(), "std": self.std.tolist()}


def make_preprocessing(spec: Any) -> nn.Module | None:
    """Turn a preset name, a ``{"mean":…, "std":…}`` dict, a ``(mean, std)`` pair or a
    module into a preprocessing module (``None`` for the identity)."""
    if spec is None or isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in PREPROCESSING_PRESETS:
            raise ValueError(
                f"unknown preprocessing {spec!r}; choose one of {sorted(PREPROCESSING_PRESETS)} or give mean and std"
            )
        preset = PREPROCESSING_PRESETS[key]
        return None if preset is None else Normalize(*preset)
    if isinstance(spec, dict):
        if spec.get("type", "normalize") == "identity":
            return None
        return Normalize(spec["mean"], spec["std"])
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return Normalize(spec[0], spec[1])
    raise TypeError(f"cannot make preprocessing from {type(spec).__name__}: {spec!r}")


@dataclass(frozen=True)
class Architecture:
    """What rebuilds a Classifier's network from the registry: ``build_network(name, num_classes,
    **kwargs)``. :func:`~overinterp.create_model` sets it; :func:`~overinterp.models.save_checkpoint`
    records it."""

    name: str
    num_classes: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", dict(self.kwargs))


class Classifier(nn.Module):
    """An image classifier on pixels in ``[0, 1]``.

    ``forward``: images ``(N, C, H, W)`` in ``[0, 1]`` → logits ``(N, K)``.

    Args:
        network: module mapping preprocessed images to logits.
        preprocessing: applied before ``network``; a module, a preset name
            (``"imagenet"``, ``"cifar10"``, ``"none"``) or ``(mean, std)``.
        baseline: default masking value in pixel space, a scalar or ``(C,)`` or
            ``(C, H, W)``; defaults to the preprocessing's mean (0 after
            normalisation), else 0.
        name: registry name or free text, recorded in traces.
        class_names: optional human-readable class names.
        architecture: the registry record of ``network`` (``None``: not a registry network,
            e.g. an imported or file model); ``num_classes`` defaults to its.

    Attributes ``architecture`` and ``num_classes`` (``None`` when unknown) are part of the
    contract: checkpoints, ensembles and results read them. ``source_file`` and
    ``source_sha256`` name the file the model was loaded from and the sha256 of its bytes
    (:meth:`record_source`; ``None`` for a model built in memory): results record them.
    """

    takes_pixels = True

    def __init__(
        self,
        network: nn.Module,
        preprocessing: Any = None,
        baseline: float | Sequence[float] | Tensor | None = None,
        *,
        name: str | None = None,
        class_names: Sequence[str] | None = None,
        architecture: Architecture | None = None,
    ) -> None:
        super().__init__()
        self.architecture = architecture
        self.num_classes: int | None = None if architecture is None else architecture.num_classes
        self.source_file: str | None = None
        self.source_sha256: str | None = None
        self.network = network
        self.preprocessing = make_preprocessing(preprocessing)
        if baseline is None:
            mean = getattr(self.preprocessing, "mean", None)
            baseline = mean.clone() if isinstance(mean, Tensor) else torch.zeros(())
        self.register_buffer("baseline", torch.as_tensor(baseline, dtype=torch.float32).clone())
        self.name = name or type(network).__name__
        self.class_names = list(class_names) if class_names is not None else None

    def record_source(self, path: Any) -> "Classifier":
        """Record ``path`` (absolute) and the sha256 of its bytes as where this model came from."""
        from pathlib import Path

        from overinterp._atomic import file_sha256

        self.source_file = str(Path(path).resolve())
        self.source_sha256 = file_sha256(path)
        return self

    @property
    def arch(self) -> str | None:
        """The registry architecture's name (``architecture.name``), else ``None``."""
        return None if self.architecture is None else self.architecture.name

    def forward(self, images: Tensor) -> Tensor:
        x = images if self.preprocessing is None else self.preprocessing(images)
        return self.network(x)

    def preprocessing_config(self) -> dict[str, Any]:
        """JSON-able description of the preprocessing (stored with checkpoints)."""
        if self.preprocessing is None:
            return {"type": "identity"}
        config = getattr(self.preprocessing, "config", None)
        if config is None:
            raise TypeError(f"preprocessing {type(self.preprocessing).__name__} has no config()")
        return config()


def check_eval_mode(model: Callable[..., Any]) -> None:
    """Refuse models (or any of their sub-modules) in training mode."""
    if isinstance(model, nn.Module):
        training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
        if training:
            shown = ", ".join(training[:3]) + (" …" if len(training) > 3 else "")
            raise ValueError(
                f"the model is in training mode ({shown}); call model.eval() first — in training "
                "mode BatchNorm and Dropout make a candidate's score depend on the rest of its batch"
            )


def resolve_baseline(
    mask_value: float | Sequence[float] | Tensor | None,
    model: Any,
    image_shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """The masking value as a ``(C, H, W)`` tensor in the space the model takes.

    ``mask_value`` may be a scalar, ``(C,)`` or ``(C, H, W)``; ``None`` takes the
    Classifier's baseline, else 0.
    """
    c, h, w = image_shape
    if mask_value is None:
        mask_value = model.baseline if isinstance(model, Classifier) else 0.0
    value = torch.as_tensor(mask_value)
    if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"mask_value must be numeric, got dtype {value.dtype}")
    value = value.to(device=device, dtype=dtype)
    if value.dim() == 0:
        out = value.expand(c, h, w)
    elif value.dim() == 1 and value.shape[0] == c:
        out = value.view(c, 1, 1).expand(c, h, w)
    elif tuple(value.shape) == (c, h, w):
        out = value
    else:
        raise ValueError(
            f"mask_value must be a scalar, ({c},) or ({c}, {h}, {w}) for images of shape "
            f"{(c, h, w)}; got shape {tuple(value.shape)}"
        )
    if not torch.isfinite(out).all():
        raise ValueError("mask_value contains NaN or inf")
    return out.contiguous()
