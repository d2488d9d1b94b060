"""Models from outside the registry, as :class:`~overinterp.Classifier` objects in eval mode.

* :func:`imagenet_classifier` — any torchvision classifier (Inception-v3 by
  default) or, when installed, any timm model, with its own input size and
  normalisation; weights from a file, or from the torch hub cache where
  torchvision/timm put downloads. Offline and without either, a clear error
  says where the file is expected.
* :func:`robustbench_classifier` — an adversarially robust model from the
  RobustBench zoo (needs the ``robustbench`` package, and internet the first
  time a model's weights are fetched).
* :func:`user_model` — any architecture from any codebase, by import path
  ``pkg.module:ClassName`` plus constructor kwargs and a checkpoint, so models
  from other projects work unchanged.

Checkpoints are read with ``torch.load(weights_only=True)`` only; the weights
may sit under ``state_dict``, ``model_state_dict``, ``model`` or ``net``, or be
a bare state dict; ``module.`` prefixes (DataParallel) are stripped.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from overinterp.errors import UserInputError
from overinterp.models.checkpoint import load_state_dict_checked, strip_key_prefixes
from overinterp.models.classifier import Classifier

__all__ = [
    "MissingDependencyError",
    "imagenet_classifier",
    "robustbench_classifier",
    "user_model",
    "read_weights",
    "CIFAR10_MEAN_PIXEL",
]

#: CIFAR-10 training-set mean pixel: the paper's masking value for models that take raw [0, 1] pixels.
CIFAR10_MEAN_PIXEL = (0.4914, 0.4822, 0.4465)

_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net")


class NotAModelError(UserInputError, TypeError):
    """An ``import:`` target that cannot be called with the given options or does not return an ``nn.Module``."""


class MissingDependencyError(ImportError, ValueError):
    """An optional package (timm, robustbench, ai-edge-litert) is needed but not installed."""


def read_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a weights file (see the module doc), ``module.`` prefixes removed."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or pickled-module files
        raise ValueError(
            f"cannot read weights {p} with torch.load(weights_only=True): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''} (a whole pickled model is not accepted: save "
            "its state_dict())"
        ) from exc
    if isinstance(obj, Mapping):
        for key in _WEIGHT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values())):
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"weights {p} hold no state dict: expected tensors under one of {_WEIGHT_KEYS} or a bare "
            f"state dict; found {keys}"
        )
    return strip_key_prefixes(dict(obj), ("module.",))


# --------------------------------------------------------------------------- ImageNet


def _torchvision_spec(name: str) -> tuple[Any, dict[str, Any]] | None:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        return None
    kwargs: dict[str, Any] = {}
    if name in ("inception_v3", "googlenet"):
        # the published weights expect [-1, 1] inputs; transform_input maps ImageNet-normalised ones there
        kwargs = {"aux_logits": True, "transform_input": True}
    return builder, kwargs


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def imagenet_classifier(
    name: str = "inception_v3",
    weights: str | os.PathLike[str] | None = None,
    *,
    source: str = "auto",
    baseline: float | Sequence[float] | Tensor | None = None,
    transform: str = "torchvision",
) -> Classifier:
    """An ImageNet classifier on pixels in ``[0, 1]`` (``forward``: ``(N, 3, S, S)`` → ``(N, 1000)``).

    Args:
        name: a torchvision classification model (``inception_v3``, ``resnet50``,
            ``vit_b_16`` …) or, with ``timm`` installed, a timm model name.
        weights: a weights file (state dict); ``None``: the file torchvision
            (or timm) downloads, from the torch hub cache
            (``$TORCH_HOME/hub/checkpoints``); ``"random"``: random weights
            (timing and tests only).
        source: ``"torchvision"``, ``"timm"`` or ``"auto"`` (torchvision first).
        baseline: masking value in pixels; default the normalisation mean (0
            after normalising, the paper's masking).
        transform: the evaluation transform the data loader should apply, as
            ``resize`` (shorter side) then a centre crop of ``input_size``.
            ``"torchvision"`` (default): the weights' own (Inception-v3: 342 →
            299, which cuts the image's border off; timm: the model's
            ``crop_pct``); ``"paper"``: the authors' pipeline, shorter side
            resized straight to the crop size (Inception-v3: 299 → 299), so the
            whole central square is kept. The default stays the weights' own
            because their published accuracy (77.3% top-1 for Inception-v3) was
            measured with it and ``ImageNetSISConfig`` defaults to it; pass
            ``"paper"`` to reproduce the paper's inputs.

    The result has ``input_size`` (crop, e.g. 299 for Inception-v3),
    ``resize`` (shorter side before the crop: 342, or 299 with ``"paper"``) and
    ``transform`` for the data loader, and ImageNet class names.

    Raises:
        FileNotFoundError: no weights file given and none in the hub cache (the
            message names the expected path and the download URL).
        MissingDependencyError: ``source="timm"`` without timm installed.
        ValueError: unknown model, or weights that do not fit it.
    """
    if source not in ("auto", "torchvision", "timm"):
        raise ValueError(f"source must be 'auto', 'torchvision' or 'timm', got {source!r}")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(map(repr, _TRANSFORMS))}, got {transform!r}")
    spec = _torchvision_spec(name) if source in ("auto", "torchvision") else None
    if spec is not None:
        return _with_transform(_torchvision_classifier(name, spec, weights, baseline), transform)
    if source == "torchvision":
        import torchvision

        raise ValueError(
            f"{name!r} is not a torchvision model; torchvision has "
            f"{', '.join(torchvision.models.list_models(module=torchvision.models)[:12])} …"
        )
    try:
        import timm  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{name!r} is not a torchvision classifier and timm is not installed: pip install timm "
            "(then any timm model name works), or use a torchvision name such as inception_v3"
        ) from None
    return _with_transform(_timm_classifier(name, weights, baseline), transform)


#: evaluation transforms of :func:`imagenet_classifier`
_TRANSFORMS = ("torchvision", "paper")


def _with_transform(model: Classifier, transform: str) -> Classifier:
    """Set ``model.resize`` for ``transform``: ``"paper"`` resizes straight to the crop size."""
    if transform == "paper":
        model.resize = model.input_size
    model.transform = transform
    return model


def _torchvision_classifier(name: str, spec: tuple[Any, dict[str, Any]], weights: Any, baseline: Any) -> Classifier:
    import torchvision

    builder, kwargs = spec
    enum = torchvision.models.get_model_weights(name).DEFAULT
    tf = getattr(enum.transforms, "keywords", {}) or {}
    crop, resize = int(tf.get("crop_size", 224)), int(tf.get("resize_size", 256))
    random = isinstance(weights, str) and weights == "random"
    extra = {"init_weights": random} if name in ("inception_v3", "googlenet") else {}
    network = builder(weights=None, **kwargs, **extra)
    if not random:
        if weights is None:
            path = _hub_file(enum.url)
            if not path.is_file():
                raise FileNotFoundError(
                    f"no weights for {name}: none given and none in the torch hub cache at {path}. With internet, "
                    f"torchvision downloads them there ({enum.url}, e.g. torchvision.models.{name}(weights="
                    "'DEFAULT')); offline, copy that file there or pass weights=PATH. "
                    "weights='random' gives random weights, for timing only"
                )
        else:
            path = Path(weights)
        load_state_dict_checked(network, read_weights(path), name, str(path), kwargs)
    model = Classifier(network, "imagenet", baseline, name=name, class_names=list(enum.meta["categories"]))
    model.input_size, model.resize = crop, resize
    model.source = "torchvision"
    model.weights = "random" if random else str(path)
    return model.eval()


def _timm_classifier(name: str, weights: Any, baseline: Any) -> Classifier:
    import timm
    from timm.data import resolve_data_config

    random = isinstance(weights, str) and weights == "random"
    try:
        if weights is None:
            network = timm.create_model(name, pretrained=True)
        else:
            network = timm.create_model(name, pretrained=False)
    except Exception as exc:  # noqa: BLE001 - unknown names, offline hub downloads
        raise ValueError(
            f"timm could not create {name!r}{' with pretrained weights' if weights is None else ''}: "
            f"{type(exc).__name__}: {exc}. Offline, pass weights=PATH to a downloaded weights file"
        ) from exc
    if weights is not None and not random:
        load_state_dict_checked(network, read_weights(weights), name, str(weights))
    cfg = resolve_data_config({}, model=network)
    crop = int(cfg["input_size"][-1])
    resize = int(crop / float(cfg.get("crop_pct", 0.875)))
    model = Classifier(network, (tuple(cfg["mean"]), tuple(cfg["std"])), baseline, name=name)
    if int(getattr(network, "num_classes", 0)) == 1000:
        from overinterp.data.imagenet import imagenet_class_names

        model.class_names = imagenet_class_names()
    model.input_size, model.resize = crop, resize
    model.source = "timm"
    model.weights = "random" if random else ("timm-pretrained" if weights is None else str(weights))
    return model.eval()


# --------------------------------------------------------------------------- robust and user models


def robustbench_classifier(
    model_name: str,
    *,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: str | os.PathLike[str] = "models",
    baseline: float | Sequence[float] | Tensor | None = CIFAR10_MEAN_PIXEL,
) -> Classifier:
    """A RobustBench model (e.g. ``"Carmon2019Unlabeled"``) on raw ``[0, 1]`` pixels.

    RobustBench models normalise inside, so the Classifier has no preprocessing;
    the baseline defaults to the CIFAR-10 mean pixel (what 0 after
    normalisation is for the standard models).

    Raises:
        MissingDependencyError: robustbench is not installed.
        ValueError: RobustBench could not load the model (unknown name, or its
            weights are not in ``model_dir`` and cannot be downloaded).
    """
    try:
        from robustbench.utils import load_model
    except ImportError:
        raise MissingDependencyError(
            "RobustBench models need the robustbench package (pip install "
            "git+https://github.com/RobustBench/robustbench.git) and internet to fetch weights the first time. "
            "Offline, load a downloaded checkpoint directly: create_model('wrn28_10', checkpoint=PATH, "
            "preprocessing='none', baseline=CIFAR10_MEAN_PIXEL) or user_model('pkg.module:Class', PATH)"
        ) from None
    try:
        network = load_model(
            model_name=model_name, dataset=dataset, threat_model=threat_model, model_dir=str(model_dir)
        )
    except Exception as exc:  # noqa: BLE001 - network errors, unknown names
        raise ValueError(
            f"RobustBench could not load {model_name!r} ({dataset}, {threat_model}): {type(exc).__name__}: {exc}. "
            f"Its weights are downloaded into {model_dir}/ on first use, which needs internet"
        ) from exc
    model = Classifier(network, None, baseline, name=f"robustbench:{model_name}")
    model.source = "robustbench"
    return model.eval()


def _import_target(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected an import path 'package.module:ClassName', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for {target!r}: {exc} (is it on PYTHONPATH?)") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserInputError(f"{target} is a {type(obj).__name__}, not a class or function that builds a model")
    return obj


def user_model(
    target: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    kwargs: Mapping[str, Any] | None = None,
    preprocessing: Any = "none",
    baseline: float | Sequence[float] | Tensor | None = None,
    name: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Classifier:
    """Any architecture, by import path: ``ClassName(**kwargs)`` with ``checkpoint``'s weights.

    Args:
        target: ``"package.module:ClassName"`` (or a builder function; dotted
            attributes allowed after the colon).
        checkpoint: weights file (see the module doc); ``None`` keeps the
            constructor's initialisation.
        kwargs: constructor arguments.
        preprocessing: applied before the network (a preset, ``(mean, std)``…);
            default ``"none"``: the network receives ``[0, 1]`` pixels, as
            robustness codebases that normalise inside expect.
        baseline: masking value in pixels (default: the preprocessing mean, else 0;
            pass :data:`CIFAR10_MEAN_PIXEL` for the paper's masking of a
            CIFAR-10 model that normalises inside).

    Raises:
        UserInputError: (a ``ValueError``) bad import path, a target that is not callable, fails
            on the keyword arguments or does not return an ``nn.Module``; weights that do not fit
            (keys listed).
    """
    builder = _import_target(target)
    try:
        network = builder(**dict(kwargs or {}))
    except TypeError as exc:
        raise NotAModelError(f"{target}(**{dict(kwargs or {})}) failed: {exc}") from None
    if not isinstance(network, nn.Module):
        raise NotAModelError(f"{target} returned a {type(network).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_state_dict_checked(network, read_weights(checkpoint), target, str(checkpoint), dict(kwargs or {}))
    model = Classifier(
        network, preprocessing, baseline, name=name or target.rpartition(":")[2], class_names=class_names
    )
    model.source = target
    if checkpoint is not None:
        model.record_source(checkpoint)
    return model.eval()
