"""Model files from other toolchains, and the input contract that says how to feed them.

Formats, detected from the file (extension and magic bytes; ``FORMAT:PATH`` names one explicitly):

========================  =====================================================  =================
format                    file                                                   gradients
========================  =====================================================  =================
``torchscript``           ``torch.jit.save`` (a zip with ``code/``)              yes
``pt2``                   ``torch.export.save`` (a zip with ``archive_format``)  yes
``onnx``                  an ONNX ``ModelProto``, run by onnxruntime             no (forward-only)
``tflite``                a TFLite flatbuffer (``TFL3``), run by ai-edge-litert  no (forward-only)
========================  =====================================================  =================

A plain ``torch.save`` zip or pickle stays an overinterp checkpoint. Every loaded
model is a :class:`~overinterp.Classifier` on pixels ``x`` in ``[0, 1]``; the
**input contract** (spec options, :data:`CONTRACT_KEYS`) says what the file takes:

* ``range=LO:HI`` — the model takes ``LO + (HI − LO)·x`` (default ``0:1``; for an
  int8/uint8 input the range its quantisation covers, i.e. the raw integer levels);
* ``mean=…&std=…`` — then ``(v − mean) / std`` per channel, in the range's units
  (a number or a comma list; ``preprocessing=imagenet|cifar10`` gives both, for ``range=0:1``);
* ``layout=nchw|nhwc`` — default: read from the model's input shape (TFLite: NHWC, others NCHW);
* ``size=H[xW]`` and ``resize=none|bilinear|nearest`` — the input size (checked against
  the file's) and whether other image sizes are resized to it (default: refused);
* ``outputs=logits|probs|auto`` — ``auto`` (default): probabilities when one forward pass
  on a grey image gives rows in ``[0, 1]`` summing to 1 (models without a fixed input size
  and no ``size``: logits);
* ``threads=N`` — onnxruntime / TFLite threads (default 1; not part of the identity).

An int8/uint8 input gets ``q = round(v / scale + zero_point)`` with the model's own
quantisation, integer outputs are dequantised. The contract's affine part is the
Classifier's :class:`~overinterp.Normalize`, so the default baseline is the pixel the
model sees as 0 (the paper's mean-pixel masking). Each model carries ``source_digest``,
a sha256 of the file's bytes and the contract, so its fingerprint
(:func:`overinterp.results.model_fingerprint`) identifies it in dataset jobs and results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from overinterp.errors import UserInputError
from overinterp.models.classifier import PREPROCESSING_PRESETS, Classifier, Normalize

__all__ = [
    "FORMATS",
    "FORWARD_ONLY_FORMATS",
    "EXTENSIONS",
    "CONTRACT_KEYS",
    "InputContract",
    "InputTransform",
    "detect_format",
    "sniff_format",
    "load_model_file",
    "file_digest",
]

#: format → what it is (the names of ``FORMAT:PATH``)
FORMATS: dict[str, str] = {
    "torchscript": "TorchScript (torch.jit.save)",
    "pt2": "torch.export program (.pt2, torch.export.save)",
    "onnx": "ONNX (.onnx, onnxruntime: pip install 'overinterp[onnx]')",
    "tflite": "TFLite (.tflite, ai-edge-litert: pip install 'overinterp[blackbox]')",
}
FORWARD_ONLY_FORMATS = ("onnx", "tflite")
#: extension → the format it announces (others, e.g. ``.pt``, are decided by the bytes alone)
EXTENSIONS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "pt2"}
#: options of the input contract (with ``preprocessing``, ``num_classes`` and ``baseline``)
CONTRACT_KEYS = ("range", "mean", "std", "layout", "size", "resize", "outputs", "threads")
_RESIZE = ("none", "bilinear", "nearest")
_OUTPUTS = {"auto": "auto", "logits": "logits", "probs": "probabilities", "probabilities": "probabilities"}
_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}  # ModelProto fields after ir_version
_INT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def supported_formats() -> str:
    """One line naming every file format ``--model`` reads."""
    return "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + "; an overinterp/PyTorch checkpoint (torch.save)"


# --------------------------------------------------------------------------- detection


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """What the bytes of ``path`` say: ``tflite``, ``onnx``, ``torchscript``, ``pt2``,
    ``checkpoint`` (a ``torch.save`` zip or pickle), or ``None`` (not recognised).

    Raises:
        UserInputError: a zip that looks like both TorchScript and torch.export.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return None
        kinds = set()
        for name in names:
            parts = name.split("/")
            if "code" in parts[1:-1] or parts[-1] == "constants.pkl":
                kinds.add("torchscript")
            if parts[-1] == "archive_format":
                kinds.add("pt2")
        if len(kinds) > 1:
            raise UserInputError(
                f"{p}: the zip holds both TorchScript and torch.export files; name the format: "
                f"torchscript:{p} or pt2:{p}"
            )
        if kinds:
            return kinds.pop()
        return "checkpoint" if any(n.split("/")[-1] == "data.pkl" for n in names) else None
    if head[:1] == b"\x80":
        return "checkpoint"  # a legacy (non-zip) torch.save pickle
    if len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_TAGS:
        return "onnx"  # ModelProto: ir_version (field 1, varint), then another field
    return None


def _describe(fmt: str) -> str:
    return FORMATS.get(fmt, "an overinterp/PyTorch checkpoint" if fmt == "checkpoint" else fmt)


def detect_format(path: str | os.PathLike[str], declared: str | None = None) -> str:
    """The format of the model file ``path``: one of :data:`FORMATS` or ``checkpoint``.

    ``declared`` (from ``FORMAT:PATH``) wins over the extension but must not contradict the bytes.

    Raises:
        FileNotFoundError: no file at ``path``.
        UserInputError: an unknown format (the message lists the supported ones), or an
            extension (or ``declared``) that contradicts the bytes.
    """
    p = Path(path).expanduser()
    if declared is not None and declared not in FORMATS:
        raise UserInputError(f"unknown model format {declared!r}; known: {', '.join(FORMATS)}")
    if not p.is_file():
        raise FileNotFoundError(f"no model file at {p}")
    try:
        sniffed = sniff_format(p)
    except UserInputError:
        if declared in ("torchscript", "pt2"):  # a zip both could be: the declared format decides
            return declared
        raise
    by_ext = EXTENSIONS.get(p.suffix.lower())
    if declared is not None:
        if sniffed is not None and sniffed != declared:
            raise UserInputError(f"{p} was named {declared}, but its bytes are {_describe(sniffed)}")
        return declared
    if by_ext is not None and sniffed is not None and sniffed != by_ext:
        raise UserInputError(
            f"{p}: the extension {p.suffix} says {by_ext}, but the bytes are {_describe(sniffed)}; "
            f"name the format: FORMAT:{p} with FORMAT one of {', '.join(FORMATS)}"
        )
    fmt = sniffed or by_ext
    if fmt is None:
        raise UserInputError(f"{p}: unknown model file format; supported: {supported_formats()}")
    return fmt


def file_digest(path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> bytes:
    """sha256 (32 bytes) of the file's bytes and ``extra`` as canonical JSON."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps(dict(extra or {}), sort_keys=True).encode())
    return h.digest()


# --------------------------------------------------------------------------- the contract


def _numbers(value: Any, key: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out: Sequence[Any] = [value]
    elif isinstance(value, str):
        out = [v for v in value.replace(":", ",").split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        out = value
    else:
        out = [None]
    try:
        nums = tuple(float(v) for v in out)
    except (TypeError, ValueError):
        nums = ()
    if not nums or not all(math.isfinite(v) for v in nums):
        raise UserInputError(f"{key}={value!r}: expected a number or a comma list of numbers")
    return nums


@dataclass(frozen=True)
class InputContract:
    """How pixels ``x`` in ``[0, 1]`` become the model file's input (see the module doc).

    ``range``: ``(LO, HI)`` or ``None`` (0:1; integer inputs: their quantised range);
    ``mean``/``std``: per channel (length 1 or C), in the range's units; ``layout``:
    ``nchw``/``nhwc`` or ``None`` (from the model); ``size``: ``(H, W)`` or ``None``;
    ``resize``: ``none``/``bilinear``/``nearest``; ``outputs``: ``auto``/``logits``/``probabilities``.
    """

    range: tuple[float, float] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None
    size: tuple[int, int] | None = None
    resize: str = "none"
    outputs: str = "auto"
    threads: int = 1

    @classmethod
    def from_options(cls, options: Mapping[str, Any], preprocessing: str | None = None) -> "InputContract":
        """Parse spec options (values as the spec parser gives them: numbers, strings, lists).

        Raises:
            UserInputError: an unknown key or a bad value (the message names the key).
        """
        unknown = sorted(set(options) - set(CONTRACT_KEYS))
        if unknown:
            raise UserInputError(
                f"unknown model-file option(s) {', '.join(unknown)}; the input contract takes "
                f"{', '.join(CONTRACT_KEYS)} (and preprocessing, num_classes, baseline)"
            )
        kw: dict[str, Any] = {}
        if "range" in options:
            try:
                r = _numbers(options["range"], "range")
            except UserInputError:
                r = ()  # e.g. range=0-255: the message below names the syntax
            if len(r) != 2 or not r[0] < r[1]:
                raise UserInputError(f"range={options['range']!r}: expected LO:HI with LO < HI, e.g. range=0:255")
            kw["range"] = (r[0], r[1])
        for key in ("mean", "std"):
            if key in options:
                kw[key] = _numbers(options[key], key)
        if any(v <= 0 for v in kw.get("std", (1.0,))):
            raise UserInputError(f"std={options['std']!r}: every std must be > 0")
        if preprocessing is not None and preprocessing.lower() != "none":
            preset = PREPROCESSING_PRESETS.get(preprocessing.lower())
            if preset is None:
                raise UserInputError(
                    f"unknown preprocessing {preprocessing!r} for a model file; choose one of "
                    f"{sorted(PREPROCESSING_PRESETS)} or give mean=…&std=…"
                )
            if "mean" in kw or "std" in kw or kw.get("range", (0.0, 1.0)) != (0.0, 1.0):
                raise UserInputError(
                    f"preprocessing={preprocessing} is a normalisation of [0, 1] pixels; with range or "
                    "mean/std give mean=…&std=… in the range's units instead"
                )
            kw["mean"], kw["std"] = preset
            kw["range"] = (0.0, 1.0)  # a preset normalises [0, 1] pixels, also for integer-input models
        if "layout" in options:
            layout = str(options["layout"]).lower()
            if layout not in ("nchw", "nhwc"):
                raise UserInputError(f"layout={options['layout']!r}: expected nchw or nhwc")
            kw["layout"] = layout
        if "size" in options:
            s = options["size"]
            parts = _numbers(s.lower().replace("x", ",") if isinstance(s, str) else s, "size")
            if len(parts) == 1:
                parts = parts * 2
            if len(parts) != 2 or not all(v >= 1 and v == int(v) for v in parts):
                raise UserInputError(f"size={s!r}: expected H or HxW in pixels, e.g. size=32 or size=224x224")
            kw["size"] = (int(parts[0]), int(parts[1]))
        if "resize" in options:
            r = options["resize"]
            resize = {True: "bilinear", False: "none"}.get(r, r) if isinstance(r, bool) else str(r).lower()
            if resize not in _RESIZE:
                raise UserInputError(f"resize={r!r}: expected one of {', '.join(_RESIZE)}")
            kw["resize"] = resize
        if "outputs" in options:
            out = _OUTPUTS.get(str(options["outputs"]).lower())
            if out is None:
                raise UserInputError(f"outputs={options['outputs']!r}: expected logits, probs or auto")
            kw["outputs"] = out
        if "threads" in options:
            t = options["threads"]
            if isinstance(t, bool) or not isinstance(t, int) or t < 1:
                raise UserInputError(f"threads={t!r}: expected an integer >= 1")
            kw["threads"] = t
        contract = cls(**kw)
        if len(contract.mean) != len(contract.std) and 1 not in (len(contract.mean), len(contract.std)):
            raise UserInputError(f"mean has {len(contract.mean)} values but std has {len(contract.std)}")
        return contract

    def identity(self) -> dict[str, Any]:
        """The contract as JSON-able data, without the runtime-only ``threads``."""
        d = asdict(self)
        d.pop("threads")
        return d


class InputTransform(Normalize):
    """Pixels ``(N, C, H, W)`` in ``[0, 1]`` → the model file's float input: resize (optional), then
    ``(x − mean) / std`` per channel, where ``mean``/``std`` fold in the contract's range."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None, resize: str, source: str = ""
    ) -> None:
        super().__init__(mean, std)
        self.size = size
        self.resize = resize
        self.source = source or "the model"

    def forward(self, x: Tensor) -> Tensor:
        c = self.mean.numel()
        if c > 1 and x.dim() == 4 and x.shape[1] != c:  # before broadcasting would hide it
            raise UserInputError(f"{self.source} takes {c}-channel images; these have {x.shape[1]} channels")
        if self.size is not None and self.resize != "none" and tuple(x.shape[-2:]) != self.size:
            kw = {"align_corners": False, "antialias": True} if self.resize == "bilinear" else {}
            x = F.interpolate(x, size=self.size, mode=self.resize, **kw)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", resize={self.resize} to {self.size}" if self.resize != "none" else "")

    def config(self) -> dict[str, Any]:
        c = super().config()
        if self.resize != "none":
            c.update(type="input-contract", size=list(self.size or ()), resize=self.resize)
        return c


# --------------------------------------------------------------------------- runtimes


@dataclass
class _Runtime:
    """A loaded forward-only model file: its one input and output, and a batch → scores function."""

    run: Callable[[np.ndarray], np.ndarray]
    shape: list[int | None]  # the input shape, None where dynamic
    dtype: np.dtype
    quant: tuple[float, float] | None  # (scale, zero_point) of an integer input
    out_width: int | None
    out_quant: tuple[float, float] | None  # dequantisation of integer outputs


def _onnx_runtime(path: Path, threads: int) -> _Runtime:
    from overinterp.models.external import MissingDependencyError

    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(
            "ONNX models need onnxruntime: pip install 'overinterp[onnx]' (or pip install onnxruntime==1.32.0)"
        ) from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserInputError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise UserInputError(
            f"{path}: an image classifier has one input and one output; this model has inputs "
            f"{[i.name for i in ins]} and outputs {[o.name for o in outs]}"
        )
    kinds = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
        "tensor(uint8)": np.uint8,
        "tensor(int8)": np.int8,
    }
    if ins[0].type not in kinds:
        raise UserInputError(f"{path}: input type {ins[0].type} is not supported (float, double, float16, uint8, int8)")
    dtype = np.dtype(kinds[ins[0].type])
    name, out_name = ins[0].name, outs[0].name
    out_shape = outs[0].shape

    def run(batch: np.ndarray) -> np.ndarray:
        return sess.run([out_name], {name: batch})[0]

    return _Runtime(
        run,
        [d if isinstance(d, int) and d > 0 else None for d in ins[0].shape],
        dtype,
        (1.0, 0.0) if dtype in _INT_RANGES else None,
        out_shape[-1] if out_shape and isinstance(out_shape[-1], int) and out_shape[-1] > 0 else None,
        None,
    )


def _tflite_runtime(path: Path, threads: int) -> _Runtime:
    from overinterp.models.external import MissingDependencyError

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependencyError(
            "TFLite models need the ai-edge-litert package: pip install 'overinterp[blackbox]' "
            "(or pip install ai-edge-litert==2.3.0)"
        ) from None
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserInputError(
            f"{path}: the TFLite interpreter cannot load it: {str(exc).splitlines()[0][:300]}"
        ) from None
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise UserInputError(
            f"{path}: an image classifier has one input and one output; this model has "
            f"{len(ins)} inputs and {len(outs)} outputs"
        )
    inp, out = ins[0], outs[0]
    dtype = np.dtype(inp["dtype"])
    if dtype not in (np.float32, np.uint8, np.int8):
        raise UserInputError(f"{path}: input dtype {dtype} is not supported (float32, uint8, int8)")
    signature = [int(v) for v in inp.get("shape_signature", inp["shape"])]
    scale, zero = inp["quantization"]
    quant = ((float(scale), float(zero)) if scale else (1.0, 0.0)) if dtype in _INT_RANGES else None
    o_scale, o_zero = out["quantization"]
    out_quant = (float(o_scale), float(o_zero)) if np.dtype(out["dtype"]) != np.float32 and o_scale else None
    in_index, out_index = inp["index"], out["index"]
    current = [tuple(int(v) for v in inp["shape"])]

    def run(batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape) != current[0]:
            interp.resize_tensor_input(in_index, list(batch.shape), strict=True)
            interp.allocate_tensors()
            current[0] = tuple(batch.shape)
        interp.set_tensor(in_index, batch)
        interp.invoke()
        return interp.get_tensor(out_index).copy()

    out_sig = [int(v) for v in out.get("shape_signature", out["shape"])]
    return _Runtime(
        run,
        [d if d > 0 else None for d in signature],
        dtype,
        quant,
        out_sig[-1] if out_sig and out_sig[-1] > 0 else None,
        out_quant,
    )


# --------------------------------------------------------------------------- shape checks


def _resolve_layout(path: Path, shape: Sequence[int | None], declared: str | None, default: str) -> str:
    """The layout: ``declared`` (checked against a static shape), else what the shape shows, else ``default``."""
    if len(shape) != 4:
        raise UserInputError(f"{path}: expected an image input (N, C, H, W) or (N, H, W, C), the model takes {shape}")
    looks = {"nchw": shape[1], "nhwc": shape[3]}
    image_like = [k for k, c in looks.items() if c is not None and c <= 4]
    if declared is not None:
        c = looks[declared]
        if c is not None and c > 4 and image_like:
            other = image_like[0]
            raise UserInputError(
                f"{path}: layout={declared} puts the channels at axis {1 if declared == 'nchw' else 3}, where "
                f"the model's input {tuple(shape)} has {c}; it looks {other.upper()}: use layout={other}"
            )
        return declared
    return image_like[0] if len(image_like) == 1 else default


def _hw(shape: Sequence[int | None], layout: str) -> tuple[tuple[int | None, int | None], int | None]:
    """``((H, W), C)`` of a 4-d input shape in ``layout`` (``None`` where dynamic)."""
    if layout == "nchw":
        return (shape[2], shape[3]), shape[1]
    return (shape[1], shape[2]), shape[3]


def _resolve_size(path: Path, hw: tuple[int | None, int | None], declared: tuple[int, int] | None):
    if declared is not None:
        for given, have, axis in zip(declared, hw, ("height", "width")):
            if have is not None and given != have:
                raise UserInputError(
                    f"{path}: size={declared[0]}x{declared[1]} contradicts the model, whose input {axis} is {have} "
                    f"(it takes {hw[0]}×{hw[1]} images); drop size or give size={hw[0]}x{hw[1]}"
                )
        return declared
    return (int(hw[0]), int(hw[1])) if hw[0] is not None and hw[1] is not None else None


def _check_input(x: Tensor, channels: int | None, size: tuple[int, int] | None, resize: str, source: str) -> None:
    """Images ``(N, C, H, W)`` (preprocessed) against the model file's input, with messages that say the fix."""
    if channels is not None and x.shape[1] != channels:
        raise UserInputError(f"{source} takes {channels}-channel images; these have {x.shape[1]} channels")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise UserInputError(
            f"{source} takes {size[0]}×{size[1]} images, these are {x.shape[2]}×{x.shape[3]}: add "
            "resize=bilinear to the model spec (or resize the images)"
        )


def _looks_like_probabilities(scores: Tensor, tol: float = 1e-3) -> bool:
    """Rows in ``[0, 1]`` that sum to 1 within ``tol`` (a softmax head)."""
    s = scores.detach().double()
    return bool(((s >= 0) & (s <= 1)).all() and ((s.sum(1) - 1).abs() <= tol).all())


# --------------------------------------------------------------------------- the models


class _ForwardOnlyInput:
    """The black box's ``fn``: preprocessed ``(n, C, H, W)`` float tensors → ``(n, K)`` float scores."""

    def __init__(
        self,
        rt: _Runtime,
        layout: str,
        channels: int | None,
        size: tuple[int, int] | None,
        resize: str,
        source: str,
    ) -> None:
        self.rt, self.layout, self.channels, self.size, self.resize, self.source = (
            rt,
            layout,
            channels,
            size,
            resize,
            source,
        )
        self.batch = rt.shape[0]  # a static batch size, or None

    def __deepcopy__(self, memo: dict[int, Any]) -> "_ForwardOnlyInput":
        """Copies of the model (``.to(dtype)`` copies in dataset jobs) share the runtime session: it has no
        weights to change and cannot be copied."""
        return self

    def __call__(self, x: Tensor) -> np.ndarray:
        _check_input(x, self.channels, self.size, self.resize, self.source)
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        v = x.detach().double().cpu().numpy()
        if self.rt.quant is not None:
            scale, zero = self.rt.quant
            lo, hi = _INT_RANGES[self.rt.dtype]
            v = np.clip(np.rint(v / scale + zero), lo, hi)
        v = np.ascontiguousarray(v.astype(self.rt.dtype))
        n = v.shape[0]
        if self.batch is not None and n != self.batch:  # a fixed batch: pad with the first image
            if n > self.batch:
                raise ValueError(f"{self.source} takes batches of {self.batch}; got {n}")
            v = np.concatenate([v, np.repeat(v[:1], self.batch - n, axis=0)])
        y = np.asarray(self.rt.run(v))[:n]
        if y.ndim > 2 and all(d == 1 for d in y.shape[1:-1]):
            y = y.reshape(n, -1)  # e.g. (N, 1, 1, K) heads
        if self.rt.out_quant is not None and not np.issubdtype(y.dtype, np.floating):
            scale, zero = self.rt.out_quant
            y = (y.astype(np.float64) - zero) * scale
        return y


class _TorchProgram(nn.Module):
    """A TorchScript module or an unlifted torch.export program as the Classifier's network:
    preprocessed ``(N, C, H, W)`` → ``(N, K)`` logits (``log p`` for probability outputs)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        layout: str,
        channels: int | None,
        size: tuple[int, int] | None,
        resize: str,
        source: str,
        batch: int | None = None,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.module = module
        self.layout, self.channels, self.size, self.resize, self.source = layout, channels, size, resize, source
        self.batch = batch  # a program exported for a fixed batch size, or None
        self.outputs = "logits"
        self.eps = eps
        for m in module.modules():  # exported programs refuse train()/eval(); they were exported as they run
            m.training = False
        self.training = False

    def train(self, mode: bool = True) -> "_TorchProgram":
        """Sets only this wrapper's flag: a loaded program runs as it was saved."""
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.channels, self.size, self.resize, self.source)
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        if self.batch is None or x.shape[0] == self.batch:
            y = self._run(x)
        else:  # a fixed batch: chunks of it, the last padded with its first image
            b, n = self.batch, x.shape[0]
            parts = [x[s : s + b] for s in range(0, n, b)]
            last = parts[-1]
            parts[-1] = torch.cat([last, last[:1].expand(b - last.shape[0], *last.shape[1:])])
            y = torch.cat([self._run(part) for part in parts])[:n]
        if self.outputs == "probabilities":
            return torch.log(y.clamp(min=self.eps))
        return y

    def _run(self, x: Tensor) -> Tensor:
        y = self.module(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, Tensor):
            raise TypeError(f"{self.source} returned {type(y).__name__}, not a tensor of scores")
        return y.reshape(y.shape[0], -1) if y.dim() > 2 else y


def _torch_program(fmt: str, path: Path) -> tuple[nn.Module, list[int | None] | None, int | None]:
    """``(module, input shape or None, output width or None)`` of a TorchScript / .pt2 file."""
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():  # torch 2.14 marks torch.jit.load deprecated; the files are still read
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise UserInputError(f"{path}: not a loadable TorchScript file: {str(exc).splitlines()[0][:300]}") from None
        return module.eval(), None, None
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch.export raises many types for foreign archives
        raise UserInputError(f"{path}: not a loadable torch.export program: {str(exc).splitlines()[0][:300]}") from None
    user = list(program.graph_signature.user_inputs)
    nodes = {n.name: n for n in program.graph.nodes}
    if len(user) != 1:
        raise UserInputError(f"{path}: an image classifier takes one input; this program takes {user}")
    val = nodes[user[0]].meta.get("val")
    shape = None if val is None else [int(d) if isinstance(d, int) else None for d in val.shape]
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    outs = out_node.args[0] if isinstance(out_node.args[0], (list, tuple)) else [out_node.args[0]]
    oval = outs[0].meta.get("val") if hasattr(outs[0], "meta") else None
    width = int(oval.shape[-1]) if oval is not None and isinstance(oval.shape[-1], int) else None
    return program.module(), shape, width


def load_model_file(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    preprocessing: str | None = None,
    num_classes: int | None = None,
    baseline: Any = None,
    name: str | None = None,
) -> Classifier:
    """A TorchScript, torch.export, ONNX or TFLite file as a :class:`~overinterp.Classifier` in eval mode.

    ``forward``: pixels ``(N, C, H, W)`` in ``[0, 1]`` → ``(N, K)`` scores (logits, or ``log p``
    for probability outputs). ONNX and TFLite models are :class:`BlackBoxClassifier`\\ s
    (``supports_gradients = False``: gradient methods are refused); TorchScript and
    torch.export models are differentiable.

    Args:
        path: the model file.
        fmt: its format (:data:`FORMATS`); default: :func:`detect_format`.
        options: the input contract (:data:`CONTRACT_KEYS`, see the module doc).
        preprocessing: ``imagenet``/``cifar10``: the contract's mean/std for ``range=0:1``.
        num_classes: checked against the model's output width.
        baseline: masking value in pixels (scalar or ``(C,)``); default: the pixel the model sees as 0.
        name: the model's name (default: the file's stem).

    Raises:
        UserInputError: a contract that contradicts the model (size, layout/channels, classes),
            an unsupported input, or a file its runtime cannot load.
        MissingDependencyError: onnxruntime / ai-edge-litert not installed.
    """
    from overinterp.models.blackbox import BlackBoxClassifier

    p = Path(path).expanduser().resolve()
    fmt = detect_format(p, fmt)
    if fmt not in FORMATS:
        raise UserInputError(f"{p} is {_describe(fmt)}, not a model file of another toolchain ({', '.join(FORMATS)})")
    contract = InputContract.from_options(dict(options or {}), preprocessing)
    source = f"{p.name} ({fmt})"

    rt: _Runtime | None = None
    module: nn.Module | None = None
    if fmt == "onnx":
        rt = _onnx_runtime(p, contract.threads)
        shape, width = rt.shape, rt.out_width
    elif fmt == "tflite":
        rt = _tflite_runtime(p, contract.threads)
        shape, width = rt.shape, rt.out_width
    else:
        module, shape, width = _torch_program(fmt, p)
    default_layout = "nhwc" if fmt == "tflite" else "nchw"
    if shape is not None:
        layout = _resolve_layout(p, shape, contract.layout, default_layout)
        hw, channels = _hw(shape, layout)
    else:
        layout, hw, channels = contract.layout or default_layout, (None, None), None
    size = _resolve_size(p, hw, contract.size)
    if contract.resize != "none" and size is None:
        raise UserInputError(f"{p}: resize={contract.resize} needs the input size: add size=HxW")
    if channels is None and max(len(contract.mean), len(contract.std)) > 1:
        channels = max(len(contract.mean), len(contract.std))
    for key in ("mean", "std"):
        vals = getattr(contract, key)
        if channels is not None and len(vals) not in (1, channels):
            raise UserInputError(f"{p}: {key} has {len(vals)} values for a model with {channels} input channels")

    # the affine map pixels → model input, as one Normalize: ((lo + (hi − lo)·x) − mean) / std
    if contract.range is not None:
        lo, hi = contract.range
    elif rt is not None and rt.quant is not None:
        scale, zero = rt.quant
        qlo, qhi = _INT_RANGES[rt.dtype]
        lo, hi = scale * (qlo - zero), scale * (qhi - zero)
    else:
        lo, hi = 0.0, 1.0
    c = channels or max(len(contract.mean), len(contract.std))
    mean = np.broadcast_to(np.asarray(contract.mean, dtype=np.float64), (c,))
    std = np.broadcast_to(np.asarray(contract.std, dtype=np.float64), (c,))
    pix_mean = (mean - lo) / (hi - lo)
    pix_std = std / (hi - lo)
    transform = InputTransform(pix_mean.tolist(), pix_std.tolist(), size, contract.resize, source)
    if baseline is None:
        base = torch.as_tensor(np.clip(pix_mean, 0.0, 1.0), dtype=torch.float32)
        baseline = base[0] if bool((base == base[0]).all()) else base
    label = name or p.stem

    resolved = {"format": fmt, "layout": layout, "size": size, "range": [lo, hi], "channels": channels}
    if rt is not None:
        fn = _ForwardOnlyInput(rt, layout, channels, size, contract.resize, source)
        k = width if width is not None else num_classes
        probe = None
        if size is not None and (k is None or contract.outputs == "auto"):
            grey = torch.full((1, channels or 3, *size), 0.5)
            probe = torch.as_tensor(np.asarray(fn(transform(grey)), dtype=np.float64)).reshape(1, -1)
            k = k or probe.shape[1]
        if k is None:
            raise UserInputError(f"{p}: the output size is not fixed in the file; give num_classes=K (or size=HxW)")
        # quantised scores: rounding each of K moves a row's sum by up to K·scale/2
        tol = 0.05 if rt.out_quant is None else max(0.05, int(k) * rt.out_quant[0] / 2)
        outputs = contract.outputs
        if outputs == "auto":
            sums_to_one = probe is not None and _looks_like_probabilities(probe, 1e-3 if rt.out_quant is None else tol)
            outputs = "probabilities" if sums_to_one else "logits"
        model: Classifier = BlackBoxClassifier(
            fn,
            num_classes=int(k),
            outputs=outputs,
            input_format="torch:nchw:float32",
            max_batch=fn.batch,
            sum_tolerance=tol,
            baseline=baseline,
            name=label,
            preprocessing=transform,
        )
    else:
        assert module is not None
        network = _TorchProgram(
            module,
            layout=layout,
            channels=channels,
            size=size,
            resize=contract.resize,
            source=source,
            batch=None if shape is None else shape[0],
        )
        model = Classifier(network, transform, baseline, name=label)
        outputs = contract.outputs
        k = width
        if size is not None and (outputs == "auto" or k is None):
            with torch.no_grad():
                probe = network(transform(torch.full((1, channels or 3, *size), 0.5)))
            k = k or int(probe.shape[1])
            if outputs == "auto":
                outputs = "probabilities" if _looks_like_probabilities(probe) else "logits"
        outputs = "logits" if outputs == "auto" else outputs
        network.outputs = outputs
    if num_classes is not None and k is not None and int(num_classes) != int(k):
        raise UserInputError(f"{p}: num_classes={num_classes}, but the model outputs {k} scores per image")
    resolved.update(outputs=outputs, num_classes=None if k is None else int(k))
    digest = file_digest(p, {"contract": contract.identity(), "resolved": resolved})
    model.register_buffer("source_digest", torch.frombuffer(bytearray(digest), dtype=torch.uint8).clone())
    model.format = fmt  # type: ignore[assignment]
    model.source = str(p)  # type: ignore[assignment]
    model.record_source(p)
    model.contract = {**contract.identity(), **resolved}  # type: ignore[assignment]
    if k is not None:
        model.num_classes = int(k)  # type: ignore[assignment]
    return model.eval()
