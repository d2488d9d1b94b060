"""Black-box classifiers: any callable from a batch of images to class scores.

A TFLite or ONNX model, a remote service or a NumPy function gives no
gradients, but exact and k-step backward selection (:class:`~overinterp.Exact`,
:class:`~overinterp.KStep`) need only forward passes, so they work on it —
best over feature groups (:func:`~overinterp.patch_features`,
:func:`~overinterp.superpixel_features`), which keep the number of passes small.

:class:`BlackBoxClassifier` wraps such a callable as a
:class:`~overinterp.Classifier` (pixels in ``[0, 1]`` in, one score row per
image out), so :func:`~overinterp.sis.backselect` and ``find_sis`` take it as is:

* ``outputs="probabilities"``: rows ``p`` (dequantised first when the callable
  returns integers) are checked to be probabilities, then turned into
  ``log max(p, eps)``. The engine's ranking score, the target's log-odds
  ``z_t − logsumexp_{j≠t} z_j``, then equals ``log p_t − log Σ_{j≠t} p_j``, and
  the confidence it thresholds is ``p_t / Σ_j p_j`` (``p_t`` itself when the row
  sums to 1; quantised rows lose mass to rounding: sums of 0.6–1 are seen).
* ``outputs="logits"``: rows are used as they are.

**Ties.** Quantised scores move in steps (1/256 for uint8 outputs), so many
candidate removals score exactly the same; the engine then removes the lowest
feature id first (the rule of every forward-only method). With quantised
models prefer a threshold relative to the image's own confidence
(:func:`~overinterp.find_sis_relative`), since few photos reach a fixed 0.9.

:func:`tflite_classifier` builds one from a ``.tflite`` file with
``ai-edge-litert`` (``pip install overinterp[blackbox]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from overinterp.models.classifier import Classifier
from overinterp.models.predict import predict_logits

__all__ = ["BlackBoxClassifier", "tflite_classifier", "INPUT_FORMATS"]

#: ``array:layout:dtype`` combinations a black box may take.
INPUT_FORMATS = tuple(
    f"{a}:{lay}:{d}" for a in ("torch", "numpy") for lay in ("nchw", "nhwc") for d in ("float32", "uint8")
)


def _parse_format(spec: str) -> tuple[str, str, str]:
    parts = spec.lower().split(":")
    if len(parts) != 3 or f"{parts[0]}:{parts[1]}:{parts[2]}" not in INPUT_FORMATS:
        raise ValueError(f"input_format must be 'array:layout:dtype', one of {', '.join(INPUT_FORMATS)}; got {spec!r}")
    return parts[0], parts[1], parts[2]


class _BlackBoxNetwork(nn.Module):
    """Calls the black box in chunks; ``(N, C, H, W)`` pixels → ``(N, K)`` float64 logits."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        num_classes: int,
        outputs: str,
        input_format: str,
        input_size: tuple[int, int] | None,
        max_batch: int | None,
        dequantize: tuple[float, float] | None,
        eps: float,
        sum_tolerance: float | None,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.num_classes = num_classes
        self.outputs = outputs
        self.array, self.layout, self.dtype = _parse_format(input_format)
        self.input_size = input_size
        self.max_batch = max_batch
        self.dequantize = dequantize
        self.eps = eps
        self.sum_tolerance = sum_tolerance
        self.calls = 0  # images passed to the black box so far

    def _convert_in(self, x: Tensor) -> Any:
        x = x.detach()
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        x = (x * 255.0).round().clamp(0, 255).to(torch.uint8) if self.dtype == "uint8" else x.float()
        x = x.contiguous()
        return x.cpu().numpy() if self.array == "numpy" else x

    def _convert_out(self, out: Any, n: int) -> Tensor:
        if isinstance(out, Tensor):
            y = out.detach().cpu()
        else:
            try:
                y = torch.from_numpy(np.ascontiguousarray(np.asarray(out)))
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"the black box returned {type(out).__name__}, which is not an array of scores: {exc}"
                ) from None
        if y.dim() == 1 and n == 1:
            y = y.unsqueeze(0)
        if y.dim() != 2 or y.shape[0] != n or y.shape[1] != self.num_classes:
            raise ValueError(
                f"the black box must return scores of shape (N, num_classes) = ({n}, {self.num_classes}); it "
                f"returned {tuple(y.shape)} (set num_classes to its output size)"
            )
        if y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"the black box returned {y.dtype} scores; expected numbers")
        quantised = not y.is_floating_point()
        if quantised:
            if self.dequantize is None:
                raise TypeError(
                    f"the black box returned integer scores ({y.dtype}); pass dequantize=(scale, zero_point) "
                    "so they can be turned into real values (scale·(q − zero_point))"
                )
            scale, zero = self.dequantize
            y = (y.double() - float(zero)) * float(scale)
        y = y.double()
        if not torch.isfinite(y).all():
            raise ValueError("the black box returned NaN or inf scores")
        if self.outputs == "probabilities":
            lo, hi = float(y.min()), float(y.max())
            sums = y.sum(1)
            worst = float((sums - 1).abs().max())
            tol = self.sum_tolerance
            if tol is None:  # rounding each of K quantised scores moves the sum by at most K·scale/2
                tol = (
                    0.05
                    if self.dequantize is None or quantised is False
                    else max(0.05, self.num_classes * float(self.dequantize[0]) / 2)
                )
            if lo < -1e-6 or hi > 1 + 1e-6 or worst > tol:
                raise ValueError(
                    f"outputs='probabilities' was declared, but the black box returned values in [{lo:.4g}, "
                    f"{hi:.4g}] with row sums in [{float(sums.min()):.4g}, {float(sums.max()):.4g}] (allowed: "
                    f"[0, 1], sums within {tol:.3g} of 1). If it returns logits, pass "
                    "outputs='logits'; if quantised rows legitimately sum further from 1, raise sum_tolerance"
                )
            return torch.log(y.clamp(min=self.eps))
        return y

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"a black box takes images (N, C, H, W), got shape {tuple(x.shape)}")
        if self.input_size is not None and tuple(x.shape[2:]) != tuple(self.input_size):
            h, w = self.input_size
            raise ValueError(
                f"the black box takes {h}×{w} images, these are {x.shape[2]}×{x.shape[3]}: resize them first "
                f"(e.g. overinterp.data.imagenet.resize_images(images, ({h}, {w})))"
            )
        n = x.shape[0]
        step = n if self.max_batch is None else self.max_batch
        outs = []
        for s in range(0, n, step):
            chunk = x[s : s + step]
            outs.append(self._convert_out(self.fn(self._convert_in(chunk)), chunk.shape[0]))
            self.calls += chunk.shape[0]
        return torch.cat(outs).to(x.device)


class BlackBoxClassifier(Classifier):
    """A callable mapping a batch of images to class scores, as a :class:`~overinterp.Classifier`.

    ``forward``: ``(N, C, H, W)`` float pixels in ``[0, 1]`` → ``(N, K)`` float64:
    ``log max(p, eps)`` for probabilities, the logits as given otherwise.

    Args:
        fn: the black box; receives a batch in ``input_format`` (at most
            ``max_batch`` images) and returns ``(n, K)`` scores (NumPy, torch,
            or anything ``np.asarray`` takes).
        num_classes: ``K``, the width of its output.
        outputs: ``"probabilities"`` (checked: within ``[0, 1]``, rows summing
            to 1 within ``sum_tolerance``) or ``"logits"``.
        input_format: ``"array:layout:dtype"``, e.g. ``"torch:nchw:float32"``
            (pixels in [0, 1]) or ``"numpy:nhwc:uint8"`` (``round(255·x)``).
        input_size: ``(H, W)`` the black box takes; other sizes are refused.
        max_batch: images per call (``1`` for interpreters with a fixed batch).
        dequantize: ``(scale, zero_point)`` for integer outputs.
        baseline: masking value in pixel space (scalar, ``(C,)`` or ``(C, H, W)``).
        eps: floor of ``p`` before the log (keeps log-odds finite).
        sum_tolerance: allowed ``|Σ_j p_j − 1|`` per row; default 0.05 for float
            outputs and ``K·scale/2`` (the most rounding can move the sum) for
            quantised ones, so for quantised outputs mainly the range is checked.
        name: recorded in traces.
        class_names: used in figures.
        preprocessing: applied to the pixels before ``fn`` sees them (as in
            :class:`~overinterp.Classifier`); ``input_format`` then describes
            the preprocessed values.
    """

    supports_gradients = False

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        num_classes: int,
        outputs: str = "probabilities",
        input_format: str = "torch:nchw:float32",
        input_size: tuple[int, int] | None = None,
        max_batch: int | None = None,
        dequantize: tuple[float, float] | None = None,
        baseline: float | Sequence[float] | Tensor = 0.0,
        eps: float = 1e-12,
        sum_tolerance: float | None = None,
        name: str | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (a batch of images → scores), got {type(fn).__name__}")
        if outputs not in ("probabilities", "logits"):
            raise ValueError(f"outputs must be 'probabilities' or 'logits', got {outputs!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be a positive integer or None, got {max_batch!r}")
        if not (0 < eps < 1):
            raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        network = _BlackBoxNetwork(
            fn,
            num_classes=num_classes,
            outputs=outputs,
            input_format=input_format,
            input_size=None if input_size is None else (int(input_size[0]), int(input_size[1])),
            max_batch=max_batch,
            dequantize=dequantize,
            eps=float(eps),
            sum_tolerance=None if sum_tolerance is None else float(sum_tolerance),
        )
        super().__init__(
            network, preprocessing, baseline, name=name or getattr(fn, "__name__", "blackbox"), class_names=class_names
        )
        self.num_classes = num_classes
        self.eval()

    @property
    def calls(self) -> int:
        """Images passed to the black box so far (forward passes)."""
        return self.network.calls

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.network.input_size

    def probabilities(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` pixels → ``(N, K)`` float64 normalised confidences (softmax of the scores),
        on the images' device. The black box is still called ``max_batch`` images at a time."""
        logits = predict_logits(
            self, images, batch_size=max(1, int(images.shape[0])), device=images.device, out_device=None
        )
        return torch.softmax(logits, dim=1)


def tflite_classifier(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    num_threads: int = 1,
    baseline: float | Sequence[float] | Tensor | None = None,
) -> BlackBoxClassifier:
    """A TFLite image classifier (e.g. a quantised MobileNet) as a :class:`BlackBoxClassifier`.

    Reads the input size, dtype and the output quantisation from the model.
    uint8 or float inputs in NHWC; outputs are taken as probabilities (the
    usual softmax head), dequantised. Called one image at a time (many
    converted models fix the batch at 1).

    Args:
        path: the ``.tflite`` file.
        labels: a text file with one class name per line, or the names.
        num_threads: interpreter threads.
        baseline: masking value in pixels; default: the pixel the network sees
            as 0 (``zero_point / 255`` for uint8 inputs, i.e. mid-grey for the
            MobileNets), the analogue of the paper's mean-pixel masking.
    """
    from overinterp.models.external import MissingDependencyError

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependencyError(
            "TFLite models need the ai-edge-litert package: pip install 'overinterp[blackbox]' "
            "(or pip install ai-edge-litert==2.3.0)"
        ) from None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no TFLite model at {p}")
    interp = Interpreter(model_path=str(p), num_threads=int(num_threads))
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    shape = [int(v) for v in inp["shape"]]
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise ValueError(f"{p}: expected an NHWC image input, the model takes shape {shape}")
    in_dtype = np.dtype(inp["dtype"])
    if in_dtype not in (np.uint8, np.float32):
        raise ValueError(f"{p}: input dtype {in_dtype} is not supported (uint8 or float32)")
    num_classes = int(out["shape"][-1])
    scale, zero = out["quantization"]
    dequant = (float(scale), int(zero)) if np.dtype(out["dtype"]) != np.float32 and scale else None
    in_scale, in_zero = inp["quantization"]
    if baseline is None:
        baseline = float(in_zero) / 255.0 if in_dtype == np.uint8 and in_scale else 0.5
    names: list[str] | None
    if labels is None:
        names = None
    elif isinstance(labels, (str, os.PathLike)):
        names = Path(labels).read_text(encoding="utf-8").splitlines()
        names = [n for n in names if n.strip()]
    else:
        names = list(labels)
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} labels for a model with {num_classes} outputs")
    in_index, out_index = inp["index"], out["index"]

    def run(batch: np.ndarray) -> np.ndarray:
        interp.set_tensor(in_index, batch)
        interp.invoke()
        return interp.get_tensor(out_index).copy()

    model = BlackBoxClassifier(
        run,
        num_classes=num_classes,
        outputs="probabilities",
        input_format=f"numpy:nhwc:{'uint8' if in_dtype == np.uint8 else 'float32'}",
        input_size=(shape[1], shape[2]),
        max_batch=1,
        dequantize=dequant,
        baseline=baseline,
        name=p.stem,
        class_names=names,
    )
    model.source = str(p)
    return model
