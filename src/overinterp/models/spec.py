"""One model-spec parser: a string (or command-line options) → :class:`ModelSpec` → a model.

The forms (documented once, in docs/how-to/model-formats.md), each
optionally prefixed by ``LABEL=`` and followed by ``?key=value&…`` options:

* ``NAME[@CKPT]`` — a registry architecture (``overinterp models``) with optional weights;
  ``NAME?pretrained=true`` — with its public release weights (:mod:`overinterp.models.pretrained`);
* ``PATH.json`` — an ensemble file;
* ``PATH`` — an overinterp checkpoint (it records its architecture);
* ``robustbench:NAME`` — the RobustBench zoo (options ``threat_model``, ``dataset``, ``model_dir``);
* ``import:pkg.module:Class[@CKPT]`` — any architecture from another codebase
  (other options are the constructor's keyword arguments);
* ``PATH`` of a TorchScript, torch.export (``.pt2``), ONNX or TFLite file, detected from
  its bytes (``FORMAT:PATH`` names the format: ``torchscript``, ``pt2``, ``onnx``, ``tflite``);
  its options are the input contract of :mod:`overinterp.models.formats`, e.g.
  ``m.tflite?range=0:255&layout=nhwc&outputs=probs``.

Options ``preprocessing``, ``baseline`` (a number, a comma list, or ``cifar10`` for the
CIFAR-10 mean pixel) and ``num_classes`` are loading options; the rest go to the builder.
An existing file is always taken whole as a path, so paths may contain ``@``.

**No code from data.** An ``import:`` spec runs code (it imports a module and calls it), so it
loads only from a spec marked ``trust_code=True``: the command line marks what the user typed;
a spec read from a file — a job manifest, an audit plan, a Ray task — is untrusted unless the
reader was given ``trust_code=True``. Everything else (registry names, checkpoints, ensembles,
model files of the declared formats) never runs code and needs no opt-in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from overinterp.errors import UserInputError
from overinterp.models.formats import EXTENSIONS, FORMATS, FORWARD_ONLY_FORMATS, InputContract, detect_format

__all__ = ["ModelSpec", "UntrustedCodeError", "parse_model_spec", "load_model_spec"]

_LABEL = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")
_LOAD_KEYS = ("preprocessing", "baseline", "num_classes")
_ROBUSTBENCH_KEYS = ("threat_model", "dataset", "model_dir")
ROBUSTBENCH = "robustbench:"
IMPORT = "import:"


class UntrustedCodeError(UserInputError):
    """A spec names code to import (``import:``) but was not marked ``trust_code=True``."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model, as plain data that pickles and goes into JSON.

    ``name``: a registry name, an ensemble ``.json``, ``robustbench:NAME``,
    ``import:pkg.module:Class``, ``FORMAT:PATH`` of a model file (``torchscript``, ``pt2``,
    ``onnx``, ``tflite``), or ``None`` with an overinterp checkpoint (which records its
    architecture). ``options``: builder keyword arguments (a model file's: its input contract);
    ``baseline``: the masking value; ``label``: the display name (default: derived).
    ``pretrained``: a registry name with its public release weights (instead of a checkpoint).
    ``trust_code``: whether an ``import:`` spec may run its code (see the module doc); not part
    of the spec's identity, never written to JSON, ``False`` for every spec read back with
    :meth:`from_dict` unless the reader says otherwise.
    """

    name: str | None = None
    checkpoint: str | None = None
    preprocessing: str | None = None
    num_classes: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    baseline: Any = field(default=None, hash=False)
    label: str | None = None
    pretrained: bool = False
    trust_code: bool = field(default=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.name is None and self.checkpoint is None:
            raise ValueError("a model needs a registry name, an ensemble .json or a checkpoint")
        object.__setattr__(self, "options", dict(self.options or {}))
        for attr in ("name", "checkpoint"):
            v = getattr(self, attr)
            # absolute paths, so that workers started elsewhere find the same files
            if v is not None and (attr == "checkpoint" or str(v).lower().endswith(".json")) and Path(v).exists():
                object.__setattr__(self, attr, str(Path(v).resolve()))
        fmt = _file_format(self.name)
        if fmt is not None:
            path = Path(str(self.name)[len(fmt) + 1 :]).expanduser()
            if path.exists():
                object.__setattr__(self, "name", f"{fmt}:{path.resolve()}")

    @property
    def kind(self) -> str:
        """``registry``, ``ensemble``, ``checkpoint``, ``robustbench``, ``import``, or a model
        file's format: ``torchscript``, ``pt2``, ``onnx``, ``tflite``."""
        name = self.name or ""
        fmt = _file_format(name)
        if fmt is not None:
            return fmt
        if name.startswith(ROBUSTBENCH):
            return "robustbench"
        if name.startswith(IMPORT):
            return "import"
        if name.lower().endswith(".json"):
            return "ensemble"
        return "registry" if name else "checkpoint"

    @property
    def display_name(self) -> str:
        """``label``, else the architecture, class or file stem."""
        if self.label:
            return self.label
        name = self.name or ""
        if self.kind == "robustbench":
            return name[len(ROBUSTBENCH) :]
        if self.kind == "import":
            return name.rpartition(":")[2]
        if self.kind == "ensemble":
            return Path(name).stem
        if self.kind in FORMATS:
            return Path(name.partition(":")[2]).stem
        return name or Path(str(self.checkpoint)).stem

    @property
    def forward_only(self) -> bool:
        """A model without gradients (ONNX, TFLite): only forward-only methods run on it."""
        return self.kind in FORWARD_ONLY_FORMATS

    def check_trusted(self) -> None:
        """Raise :class:`UntrustedCodeError` for an ``import:`` spec not marked ``trust_code=True``."""
        if self.kind == "import" and not self.trust_code:
            raise UntrustedCodeError(
                f"model spec {self.name!r} names Python code to import and run, and it was not given by you "
                "directly (it was read from a file such as a job manifest); code named by files runs only when "
                "you opt in with trust_code=True for files you trust"
            )

    def load(self) -> nn.Module:
        """The model, in eval mode on the CPU.

        Raises:
            UntrustedCodeError: an ``import:`` spec without ``trust_code=True``.
        """
        from overinterp.models.external import robustbench_classifier, user_model

        self.check_trusted()
        from overinterp.models.factory import load_model

        baseline = _baseline(self.baseline)
        kind = self.kind
        if kind in FORMATS:
            from overinterp.models.formats import load_model_file

            if self.checkpoint is not None:
                raise ValueError(f"model {self.name}: a {kind} file holds its weights; do not also give a checkpoint")
            return load_model_file(
                str(self.name)[len(kind) + 1 :],
                kind,
                self.options,
                preprocessing=self.preprocessing,
                num_classes=self.num_classes,
                baseline=baseline,
                name=self.label,
            )
        if kind == "robustbench":
            kw = dict(self.options)
            unknown = sorted(set(kw) - set(_ROBUSTBENCH_KEYS))
            if unknown or self.checkpoint or self.preprocessing or self.num_classes:
                raise ValueError(
                    f"model {self.name}: robustbench models take only the options "
                    f"{', '.join(_ROBUSTBENCH_KEYS)} and baseline, got {unknown or 'a checkpoint/preprocessing'}"
                )
            if baseline is not None:
                kw["baseline"] = baseline
            model = robustbench_classifier(str(self.name)[len(ROBUSTBENCH) :], **kw)
        elif kind == "import":
            if self.num_classes is not None:
                raise ValueError(f"model {self.name}: pass num_classes as the constructor's own option")
            model = user_model(
                str(self.name)[len(IMPORT) :],
                self.checkpoint,
                kwargs=dict(self.options),
                preprocessing=self.preprocessing or "none",
                baseline=baseline,
            )
        else:
            kwargs = dict(self.options)
            if baseline is not None:
                kwargs["baseline"] = baseline
            if self.pretrained:
                kwargs["pretrained"] = True
            model = load_model(
                self.name,
                checkpoint=self.checkpoint,
                preprocessing=self.preprocessing,
                num_classes=self.num_classes,
                **kwargs,
            )
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        """The four classic fields always; ``options``, ``baseline`` and ``label`` only when set
        (so a plain spec's JSON — a job manifest's — is what it always was)."""
        d = dataclasses.asdict(self)
        d.pop("trust_code")
        for key in ("options", "baseline", "label", "pretrained"):
            if not d[key]:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, trust_code: bool = False) -> "ModelSpec":
        """The spec of :meth:`to_dict`'s output, as read from a file: untrusted (an ``import:`` spec
        will not load) unless ``trust_code=True``. Unknown fields are an error."""
        if not isinstance(d, Mapping):
            raise UserInputError(f"a model spec must be a JSON object, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"trust_code"}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise UserInputError(f"model spec {dict(d)!r}: unknown fields {unknown}; known: {sorted(fields)}")
        return cls(**dict(d), trust_code=bool(trust_code))

    def as_text(self) -> str | None:
        """A spec string that :func:`parse_model_spec` reads back as this spec (what a user types
        on the command line: ``LABEL=NAME@CKPT?key=value&…``), or ``None`` when no string does (a
        path holding ``?`` or ``&``, a label the ``LABEL=`` form cannot carry)."""

        def text(v: Any) -> str:
            if isinstance(v, str) and _value(v) == v:
                return v
            return json.dumps(v, separators=(",", ":"))

        head = (self.name or "") + (f"@{self.checkpoint}" if self.name and self.checkpoint else "")
        options = dict(self.options)
        for key in _LOAD_KEYS:
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        if self.pretrained:
            options["pretrained"] = True
        query = "&".join(f"{k}={text(v)}" for k, v in options.items())
        spec = (
            (f"{self.label}=" if self.label else "") + (head or str(self.checkpoint)) + (f"?{query}" if query else "")
        )
        try:
            same = parse_model_spec(spec) == self
        except (ValueError, OSError):
            return None
        return spec if same else None

    def __str__(self) -> str:
        parts = [self.name or str(self.checkpoint)]
        if self.name and self.checkpoint:
            parts.append(f"@{self.checkpoint}")
        return "".join(parts)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _baseline(value: Any) -> Any:
    from overinterp.models.external import CIFAR10_MEAN_PIXEL

    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() == "cifar10":
            return CIFAR10_MEAN_PIXEL
        try:
            return [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"baseline {value!r}: expected a number, a comma list or cifar10") from None
    return value


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except OSError:
        return False


#: suffixes of weights files: a spec ending in one is a path, never a registry name
_WEIGHT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".tar", ".bin", ".json", ".safetensors", ".ptl", *EXTENSIONS)


def _path_like(text: str) -> bool:
    """Whether a spec's name part is meant as a file (a folder separator, ``~``, or a weights suffix)."""
    return "/" in text or "\\" in text or text.startswith(("~", ".")) or text.lower().endswith(_WEIGHT_SUFFIXES)


def _file_format(name: str | None) -> str | None:
    """The format of a ``FORMAT:PATH`` name, else ``None``."""
    head, sep, rest = (name or "").partition(":")
    return head if sep and rest and head in FORMATS else None


def _model_file(
    spec: Any, path: str, declared: str | None, options: dict[str, Any], load: dict[str, Any], ckpt: str | None, label
) -> ModelSpec | None:
    """The spec of a model file of another toolchain at ``path`` (its contract checked here, before any
    loading), or ``None`` when the file is an overinterp/PyTorch checkpoint."""
    fmt = detect_format(path, declared)
    if fmt == "checkpoint":
        return None
    if ckpt is not None:
        raise UserInputError(
            f"model {spec!r} is a {fmt} file, which holds its weights; do not also give one", argument="checkpoint"
        )
    InputContract.from_options(options, load.get("preprocessing"))
    n = load.get("num_classes")
    return ModelSpec(
        f"{fmt}:{path}",
        None,
        None if load.get("preprocessing") is None else str(load["preprocessing"]),
        None if n is None else int(n),
        options,
        load.get("baseline"),
        label,
    )


def parse_model_spec(
    spec: str | os.PathLike[str] | None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    preprocessing: str | None = None,
    num_classes: int | None = None,
    trust_code: bool = False,
    pretrained: bool = False,
) -> ModelSpec:
    """Parse a model spec (see the module doc); the keyword arguments are the command
    line's ``--checkpoint``, ``--preprocessing`` and ``--num-classes``, and may not
    contradict the string. ``trust_code=True`` lets an ``import:`` spec run its code: pass it
    for a spec the user typed, never for one read from a file they did not write.
    ``pretrained=True`` (the command line's ``--pretrained``) is ``?pretrained=true``."""
    parsed = _parse(spec, os.fspath(checkpoint) if checkpoint is not None else None, preprocessing, num_classes)
    if "pretrained" in parsed.options or pretrained:
        parsed = _with_pretrained(spec, parsed, pretrained)
    return dataclasses.replace(parsed, trust_code=bool(trust_code)) if trust_code else parsed


_TRUE, _FALSE = (True, 1, "true", "yes", "1"), (False, 0, "false", "no", "0")


def _with_pretrained(text: Any, parsed: ModelSpec, flag: bool) -> ModelSpec:
    """``parsed`` with the ``pretrained`` option moved to its field (checked: a known release)."""
    from overinterp.models.pretrained import list_pretrained

    options = dict(parsed.options)
    value = options.pop("pretrained", True)
    value = value.lower() if isinstance(value, str) else value
    if value not in _TRUE and value not in _FALSE:
        raise ValueError(f"model spec {text!r}: pretrained must be true or false, got {value!r}")
    on = value in _TRUE or flag
    if on and (parsed.kind != "registry" or parsed.checkpoint is not None):
        raise ValueError(f"model spec {text!r}: pretrained weights go with a registry name and no checkpoint")
    if on and parsed.name not in list_pretrained():
        raise ValueError(
            f"model spec {text!r}: no pretrained weights are known for {parsed.name!r} "
            f"(known: {', '.join(list_pretrained())})"
        )
    return dataclasses.replace(parsed, options=options, pretrained=bool(on))


def _parse(spec: Any, ckpt: str | None, preprocessing: str | None, num_classes: int | None) -> ModelSpec:
    if spec is None:
        if ckpt is None:
            raise ValueError("give a model: a registry name, an ensemble .json or a checkpoint")
        return ModelSpec(None, ckpt, preprocessing, num_classes)
    text = os.fspath(spec).strip()
    label = None
    if not _is_file(text):
        m = _LABEL.match(text)
        if m:
            label, text = m.group(1), m.group(2)
    if _is_file(text):  # a file, taken whole: an ensemble, a model file or an own checkpoint
        if text.lower().endswith(".json"):
            return ModelSpec(text, ckpt, preprocessing, num_classes, label=label)
        given = {k: v for k, v in (("preprocessing", preprocessing), ("num_classes", num_classes)) if v is not None}
        file_spec = _model_file(spec, text, None, {}, given, ckpt, label)
        if file_spec is not None:
            return file_spec
        if ckpt is not None:
            raise UserInputError(f"model {text!r} is a checkpoint file; do not also give {ckpt}", argument="checkpoint")
        return ModelSpec(None, text, preprocessing, num_classes, label=label)
    body, _, query = text.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, val = part.partition("=")
        if not eq or not key:
            raise ValueError(f"model spec {spec!r}: options are key=value pairs joined by '&', got {part!r}")
        if key in options:  # 'range=0:255&range=0:1' would silently keep the last one
            raise ValueError(f"model spec {spec!r} gives {key} twice; give each option once")
        options[key] = _value(val)
    load = {k: options.pop(k) for k in _LOAD_KEYS if k in options}
    for key, given in (("preprocessing", preprocessing), ("num_classes", num_classes)):
        if given is not None:
            if key in load and load[key] != given:
                raise ValueError(f"model spec {spec!r} sets {key}={load[key]!r}, but {given!r} was also given")
            load[key] = given
    declared = _file_format(body)
    path = body[len(declared) + 1 :] if declared else body
    if declared or (_is_file(body) and not body.lower().endswith(".json")):  # a model file, taken whole
        file_spec = _model_file(spec, path, declared, options, load, ckpt, label)
        if file_spec is not None:
            return file_spec
    elif Path(body).suffix.lower() in EXTENSIONS:
        raise FileNotFoundError(f"file not found: {body} (model spec {spec!r})")
    start = -1
    name: str | None
    if body.startswith(ROBUSTBENCH):
        name, ref = body, None
        unknown = sorted(set(options) - set(_ROBUSTBENCH_KEYS))
        if unknown:
            raise ValueError(
                f"model spec {spec!r}: unknown robustbench options {unknown}; known: {', '.join(_ROBUSTBENCH_KEYS)}"
            )
    else:
        start = len(IMPORT) if body.startswith(IMPORT) else 0
        at = body.find("@", start)
        name, ref = (body, None) if at < 0 else (body[:at], body[at + 1 :])
        if not name or name == IMPORT:
            raise ValueError(
                f"model spec {spec!r}: expected NAME[@CKPT], PATH, robustbench:NAME or import:pkg.module:Class[@CKPT]"
            )
        if ref is not None and not ref.strip():
            raise ValueError(
                f"model spec {spec!r}: nothing after '@' — give the weights file (NAME@PATH), or leave out the '@' "
                "for an untrained network"
            )
        if start == 0 and _path_like(name) and not _is_file(name):
            raise FileNotFoundError(f"file not found: {name} (model spec {spec!r} is a path, not a registry name)")
    if ref is None and start == 0 and _is_file(name) and not name.lower().endswith(".json"):
        name, ref = None, name  # an own checkpoint with options: it records its architecture
    if ref is not None and ckpt is not None and ref != ckpt:
        raise UserInputError(
            f"{ckpt} was also given, but model spec {spec!r} names checkpoint {ref}", argument="checkpoint"
        )
    preproc = load.get("preprocessing")
    n = load.get("num_classes")
    return ModelSpec(
        name,
        ref or ckpt,
        None if preproc is None else str(preproc),
        None if n is None else int(n),
        options,
        load.get("baseline"),
        label,
    )


def load_model_spec(
    spec: str | os.PathLike[str] | None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    preprocessing: str | None = None,
    num_classes: int | None = None,
    trust_code: bool = False,
    pretrained: bool = False,
) -> nn.Module:
    """The model a spec names: ``parse_model_spec(...).load()``."""
    return parse_model_spec(
        spec,
        checkpoint=checkpoint,
        preprocessing=preprocessing,
        num_classes=num_classes,
        trust_code=trust_code,
        pretrained=pretrained,
    ).load()
