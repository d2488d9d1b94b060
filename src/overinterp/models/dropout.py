"""Input dropout (paper §4.4, a mitigation of overinterpretation like ensembling).

* :func:`pixel_dropout` — the training-time augmentation: each image gets an
  independent Bernoulli mask over its pixels (all channels of a pixel together);
  dropped pixels take the masking value (the model's baseline).
* :class:`InputDropoutClassifier` — the inference-time wrapper: the mean of the
  model's predictions over ``K`` fixed dropout masks, itself a
  :class:`~overinterp.Classifier`, so backward selection and SIS run on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from overinterp.models.classifier import Classifier, resolve_baseline

__all__ = ["check_dropout_rate", "dropout_keep_masks", "pixel_dropout", "InputDropoutClassifier"]


def check_dropout_rate(rate: Any, what: str = "input dropout rate") -> float:
    """``rate`` as a float in ``[0, 1)``, or a one-line ``ValueError``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate < 1:
        raise ValueError(f"{what} must be a number in [0, 1) (the probability that a pixel is dropped), got {rate!r}")
    return float(rate)


def dropout_keep_masks(
    n: int, height: int, width: int, rate: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Tensor:
    """``(n, 1, height, width)`` bool, True = kept: each pixel dropped independently with probability ``rate``.

    Draws ``n·height·width`` uniforms from ``generator`` (on ``device``); a pixel
    is dropped where its uniform is below ``rate``.
    """
    rate = check_dropout_rate(rate)
    return torch.rand(n, 1, height, width, generator=generator, device=device) >= rate


def pixel_dropout(x: Tensor, rate: float, fill: Tensor, generator: torch.Generator) -> Tensor:
    """Images ``(N, C, H, W)`` with each pixel (all ``C`` channels together) replaced by
    ``fill`` (``(C, H, W)``, same space as ``x``) with probability ``rate``, one
    independent mask per image. ``rate == 0`` returns ``x`` itself and draws nothing."""
    rate = check_dropout_rate(rate)
    if rate == 0:
        return x
    n, _, h, w = x.shape
    keep = dropout_keep_masks(n, h, w, rate, generator, x.device)
    return torch.where(keep, x, fill.to(device=x.device, dtype=x.dtype).unsqueeze(0))


class InputDropoutClassifier(Classifier):
    """A Classifier averaged over ``samples`` input-dropout masks.

    ``forward``: pixels ``(N, C, H, W)`` → ``(N, K)`` log-probabilities
    ``log( (1/S) Σ_s softmax(model(x ⊙ m_s + b ⊙ (1 − m_s))) )``, computed as a
    ``logsumexp`` of log-softmaxes (no underflow), where ``m_s`` is the ``s``-th
    ``(1, H, W)`` keep-mask (each pixel dropped with probability ``rate``) and
    ``b`` the model's baseline. Softmax of the output is exactly the mean
    predicted probability, so a SIS threshold τ on this Classifier is a threshold
    on the dropout ensemble's mean probability.

    **Mean of probabilities, not of logits**: averaging the predictive
    distributions is what "averaging predictions over dropout masks" (MC
    dropout) means, and it keeps τ a bound on a probability the wrapper
    actually predicts; a mean of logits would be a renormalised geometric mean
    of the probabilities, which one very confident mask can dominate.
    (:class:`~overinterp.models.ensemble.Ensemble` averages logits, as the
    paper's ensembles do.)

    **Deterministic**: the masks are drawn once per image size from a CPU
    generator seeded by ``seed`` (so the same on every device) and sample ``s``
    uses the same mask for every image and every call. The output is therefore a
    fixed function of each image alone — independent of batching and of earlier
    calls — as backward selection needs. ``rate == 0`` returns the wrapped
    model's logits bit for bit.

    Args:
        model: a :class:`Classifier` (pixels in ``[0, 1]``); put in eval mode.
        rate: probability that a pixel is dropped, in ``[0, 1)``.
        samples: number of masks ``S`` (≥ 1).
        seed: seed of the masks.

    The wrapper carries ``model``'s baseline (dropped pixels and SIS masking use it).
    """

    def __init__(self, model: Classifier, rate: float, samples: int = 8, seed: int = 0) -> None:
        if not isinstance(model, Classifier):
            raise TypeError(
                f"InputDropoutClassifier wraps an overinterp Classifier (pixels in [0, 1] with a baseline), "
                f"got {type(model).__name__}"
            )
        rate = check_dropout_rate(rate)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        super().__init__(
            model,
            preprocessing=None,
            baseline=model.baseline.detach().clone(),
            name=f"{model.name}+input-dropout(rate={rate:g}, samples={samples})",
            class_names=model.class_names,
        )
        self.rate, self.samples, self.seed = rate, samples, seed
        # in the state dict, so model_fingerprint tells wrappers with other settings apart
        self.register_buffer("dropout_settings", torch.tensor([rate, float(samples), float(seed)], dtype=torch.float64))
        if hasattr(model, "num_classes"):
            self.num_classes = model.num_classes
        self._masks: dict[tuple[int, int], Tensor] = {}
        self.eval()

    @property
    def model(self) -> Classifier:
        return self.network  # type: ignore[return-value]

    def masks(self, height: int, width: int) -> Tensor:
        """``(samples, 1, height, width)`` bool keep-masks (CPU), the same on every call."""
        key = (int(height), int(width))
        if key not in self._masks:
            g = torch.Generator().manual_seed(self.seed)
            with torch.inference_mode(False):  # a first call under inference mode must not cache inference tensors
                self._masks[key] = dropout_keep_masks(self.samples, key[0], key[1], self.rate, g)
        return self._masks[key]

    def forward(self, images: Tensor) -> Tensor:
        if self.rate == 0:
            return self.network(images)
        n, c, h, w = images.shape
        fill = resolve_baseline(None, self.network, (c, h, w), images.dtype, images.device).unsqueeze(0)
        masks = self.masks(h, w).to(images.device)
        total = None
        for s in range(self.samples):
            x = torch.where(masks[s : s + 1], images, fill)
            logp = torch.log_softmax(self.network(x), dim=1)
            total = logp if total is None else torch.logaddexp(total, logp)
        return total - math.log(self.samples)
