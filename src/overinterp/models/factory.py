"""How a model is made: ``create_model`` (registry name + checkpoint) and ``load_model``.

Registered architectures: ``smallcnn`` (tests, demo), the CIFAR ResNets
``resnet20``/``resnet32``/``resnet44``/``resnet56`` (He et al. 2016), the
pre-activation ``resnet18`` and ``vgg16_bn`` (the paper's three CIFAR-10
architectures are resnet20, resnet18 and vgg16_bn).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from torch import Tensor

from overinterp.models.archs import preact_resnet, resnet_cifar, small_cnn, vgg, wideresnet  # noqa: F401  (register the architectures)
from overinterp.models.checkpoint import (
    _validate_checkpoint,
    is_own_checkpoint,
    last_linear_name,
    load_checkpoint_file,
    load_state_dict_checked,
    save_checkpoint,
    strip_key_prefixes,
)
from overinterp.models.classifier import Architecture, Classifier, make_preprocessing
from overinterp.models.ensemble import Ensemble, load_ensemble, save_ensemble
from overinterp.models.registry import build_network, get_model_entry, list_models, register_model

__all__ = [
    "create_model",
    "load_model",
    "list_models",
    "Ensemble",
    "load_ensemble",
    "save_ensemble",
    "register_model",
    "save_checkpoint",
    "load_checkpoint_file",
]

_DEFAULT_NUM_CLASSES = 10


def create_model(
    name: str | None,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    *,
    baseline: float | Sequence[float] | Tensor | None = None,
    pretrained: bool = False,
    **arch_kwargs: Any,
) -> Classifier:
    """Build a registered architecture as a :class:`~overinterp.Classifier` in eval mode.

    Args:
        name: registry name (see :func:`list_models`). May be ``None`` for an
            own-format checkpoint, which records its architecture.
        num_classes: output size; ``None`` means 10 without a checkpoint, and
            what the checkpoint records (own format) or what its head's weight
            says (third-party) with one. A value that contradicts the
            checkpoint is an error.
        checkpoint: path to a checkpoint file, or an already-loaded dict.
        preprocessing: a preset name (``"imagenet"``, ``"cifar10"``, ``"none"``),
            ``{"type": "normalize", "mean": …, "std": …}``, ``(mean, std)`` or a
            module. Without a checkpoint ``None`` means identity. With an
            own-format checkpoint the recorded one is used (giving a different
            one is an error). A third-party checkpoint records none, so it must
            be given: ``None`` is refused rather than guessed.
        baseline: default masking value in pixel space; default: the recorded
            one (own format), else the preprocessing's mean.
        pretrained: load the architecture's public release weights
            (:mod:`overinterp.models.pretrained`: a local copy, the torch hub cache, else a
            download; sha256 checked) with the preprocessing they were trained with.
        **arch_kwargs: further builder arguments (e.g. ``width`` of smallcnn).

    Raises:
        ValueError: unknown name, contradicting arguments, a third-party
            checkpoint without ``preprocessing``, or weights that do not fit
            the architecture.
        FileNotFoundError: no checkpoint file at the path given.
    """
    if pretrained:
        from overinterp.models.pretrained import PRETRAINED, pretrained_file

        if checkpoint is not None:
            raise ValueError(f"create_model({name!r}): give pretrained=True or a checkpoint, not both")
        checkpoint = pretrained_file(str(name))
        release = PRETRAINED[str(name)]
        if preprocessing is not None and _preprocessing_config(preprocessing) != _preprocessing_config(
            release.preprocessing
        ):
            raise ValueError(
                f"the pretrained {name} weights were trained with the {release.preprocessing!r} preprocessing; "
                "omit preprocessing to use it"
            )
        preprocessing = release.preprocessing
    if checkpoint is None:
        if name is None:
            raise ValueError(
                f"create_model: give a model name (known models: {', '.join(list_models())}); "
                "name=None is only allowed with an own-format checkpoint, which records it"
            )
        n = _DEFAULT_NUM_CLASSES if num_classes is None else _positive_int(num_classes)
        network = build_network(name, n, **arch_kwargs)
        return _finish(network, name, n, arch_kwargs, preprocessing, baseline, None)

    if isinstance(checkpoint, Mapping):
        source = "<checkpoint dict>"
        ckpt = _validate_checkpoint(checkpoint, source)
    else:
        source = os.fspath(checkpoint)
        ckpt = load_checkpoint_file(checkpoint)

    if is_own_checkpoint(ckpt):
        model = _from_own_checkpoint(ckpt, source, name, num_classes, preprocessing, baseline, arch_kwargs)
    else:
        model = _from_third_party(ckpt, source, name, num_classes, preprocessing, baseline, arch_kwargs)
    return model if isinstance(checkpoint, Mapping) else model.record_source(source)


def load_model(
    name: str | os.PathLike[str] | None,
    checkpoint: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Classifier:
    """A registry model (:func:`create_model`) or, when ``name`` is a ``.json`` file,
    the :class:`Ensemble` it defines (:func:`load_ensemble`) — what the command
    line's ``--model`` takes.
    """
    if name is not None and os.fspath(name).lower().endswith(".json"):
        if checkpoint is not None or preprocessing is not None or num_classes is not None or kwargs:
            raise ValueError(
                f"{name} is an ensemble file: its members' checkpoints and preprocessing are in it; "
                "do not pass checkpoint, preprocessing, num_classes or architecture options"
            )
        return load_ensemble(name)
    return create_model(
        None if name is None else os.fspath(name),
        num_classes=num_classes,
        checkpoint=checkpoint,
        preprocessing=preprocessing,
        **kwargs,
    )


def _from_own_checkpoint(
    ckpt: dict[str, Any],
    source: str,
    name: str | None,
    num_classes: int | None,
    preprocessing: Any,
    baseline: Any,
    arch_kwargs: dict[str, Any],
) -> Classifier:
    arch = ckpt["arch"]
    if name is not None and name != arch:
        raise ValueError(f"checkpoint {source} holds a {arch!r} network, not {name!r}; pass name={arch!r} or name=None")
    get_model_entry(arch)  # an architecture this installation does not know: clear error
    n = ckpt["num_classes"]
    if num_classes is not None and _positive_int(num_classes) != n:
        raise ValueError(
            f"checkpoint {source} has {n} classes, but num_classes={num_classes} was given; "
            "omit num_classes to use the checkpoint's"
        )
    kwargs = dict(ckpt["arch_kwargs"])
    for key, value in arch_kwargs.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"checkpoint {source} was saved with {key}={kwargs[key]!r}, but {key}={value!r} was given")
        kwargs[key] = value
    recorded = ckpt["preprocessing"]
    if preprocessing is not None:
        given = _preprocessing_config(preprocessing)
        if not _same_preprocessing(given, recorded):
            raise ValueError(
                f"checkpoint {source} records the preprocessing {recorded}, but {given} was given; "
                "omit preprocessing to use the recorded one (the weights were trained with it)"
            )
    if baseline is None:
        baseline = ckpt["baseline"]
    network = build_network(arch, n, **kwargs)
    load_state_dict_checked(network, ckpt["state_dict"], arch, source, kwargs)
    return _finish(network, arch, n, kwargs, recorded, baseline, ckpt["class_names"])


def _from_third_party(
    ckpt: dict[str, Any],
    source: str,
    name: str | None,
    num_classes: int | None,
    preprocessing: Any,
    baseline: Any,
    arch_kwargs: dict[str, Any],
) -> Classifier:
    if name is None:
        raise ValueError(
            f"checkpoint {source} is a plain state dict that records no architecture; pass its "
            f"name (known models: {', '.join(list_models())})"
        )
    entry = get_model_entry(name)
    if preprocessing is None:
        raise ValueError(
            f"checkpoint {source} records no input normalisation (it is a third-party state dict, "
            "not an overinterp checkpoint), and a wrong guess would silently cost accuracy, so none "
            "is assumed. Pass the normalisation the weights were trained with, e.g. "
            f"create_model({name!r}, checkpoint=..., preprocessing='imagenet') for the public "
            "pretrained CIFAR ResNets (ImageNet mean/std), 'cifar10' for CIFAR-10 statistics, "
            "'none' for raw [0, 1] pixels, or {'type': 'normalize', 'mean': [...], 'std': [...]}"
        )
    state_dict = strip_key_prefixes(ckpt["state_dict"], entry.strip_prefixes)

    # The number of classes is the output size of the head in the checkpoint.
    probe_n = _DEFAULT_NUM_CLASSES if num_classes is None else _positive_int(num_classes)
    probe = build_network(name, probe_n, **arch_kwargs)
    head = last_linear_name(probe)
    recorded_n = None
    if head is not None:
        weight = state_dict.get(f"{head}.weight")
        if isinstance(weight, Tensor) and weight.dim() == 2:
            recorded_n = int(weight.shape[0])
    if num_classes is not None:
        n = _positive_int(num_classes)
        if recorded_n is not None and recorded_n != n:
            raise ValueError(
                f"checkpoint {source} has a {recorded_n}-class head ({head}.weight), but "
                f"num_classes={num_classes} was given; omit num_classes to use the checkpoint's"
            )
    else:
        n = recorded_n if recorded_n is not None else _DEFAULT_NUM_CLASSES
    network = probe if n == probe_n else build_network(name, n, **arch_kwargs)
    load_state_dict_checked(network, state_dict, name, source, arch_kwargs)
    return _finish(network, name, n, arch_kwargs, preprocessing, baseline, None)


def _finish(
    network: Any,
    arch: str,
    num_classes: int,
    arch_kwargs: Mapping[str, Any],
    preprocessing: Any,
    baseline: Any,
    class_names: Sequence[str] | None,
) -> Classifier:
    record = Architecture(arch, num_classes, arch_kwargs)
    model = Classifier(
        network, preprocessing=preprocessing, baseline=baseline, name=arch, class_names=class_names, architecture=record
    )
    return model.eval()


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_classes must be a positive integer, got {value!r}")
    return value


def _preprocessing_config(spec: Any) -> dict[str, Any]:
    module = make_preprocessing(spec)
    if module is None:
        return {"type": "identity"}
    config = getattr(module, "config", None)
    if config is None:
        raise ValueError(
            f"cannot compare the preprocessing {type(module).__name__} (it has no config()) with "
            "the one the checkpoint records; omit preprocessing to use the recorded one"
        )
    return config()


def _same_preprocessing(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("type") != b.get("type"):
        return False
    if a.get("type") != "normalize":
        return True
    for key in ("mean", "std"):
        x, y = list(a[key]), list(b[key])
        if len(x) != len(y) or not all(math.isclose(p, q, rel_tol=1e-5, abs_tol=1e-6) for p, q in zip(x, y)):
            return False
    return True
