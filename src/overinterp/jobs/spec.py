"""What a dataset job computes, as plain data that pickles and goes into JSON.

A :class:`JobSpec` holds *specs* (a :class:`~overinterp.models.ModelSpec`, a
dataset's spec string, a method's description), not live objects, so that any
worker process — local or on a Ray cluster — rebuilds the same model and images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from overinterp.models.spec import ModelSpec

__all__ = ["ModelSpec", "JobSpec"]


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides a job's shard files.

    Identity (must match to resume or add shards): the model's *fingerprint*
    and the images' fingerprint (checked by the job, so a job may move between
    machines where paths differ), positions, method, ``patch``, ``mask_value``,
    ``dtype``, ``shard_size``. Runtime (may differ between runs and workers;
    recorded per shard): the model and dataset paths, ``device``, ``threads``,
    ``batch_size``.
    """

    model: ModelSpec
    dataset: str
    positions: tuple[int, ...]
    method: dict[str, Any]
    patch: int = 1
    mask_value: tuple[float, ...] | None = None
    dtype: str = "float32"
    shard_size: int = 100
    device: str = "cpu"
    threads: int | None = None
    batch_size: int | None = None
    identity_extra: dict[str, Any] = field(default_factory=dict)

    #: the fields that are part of the job's identity (:func:`overinterp.jobs.identity.job_identity`)
    IDENTITY = ("positions", "method", "patch", "mask_value", "dtype", "shard_size")

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(
                f"dtype must be float32 or float64 (never float16: it rounds p > 0.9998 to 1), got {self.dtype!r}"
            )
        if not self.positions:
            raise ValueError("a job needs at least one image")
        if len(set(self.positions)) != len(self.positions):
            raise ValueError("image positions repeat")
        object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    @property
    def num_shards(self) -> int:
        return -(-len(self.positions) // self.shard_size)

    def shard_positions(self, shard: int) -> tuple[int, ...]:
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        return self.positions[shard * self.shard_size : (shard + 1) * self.shard_size]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        d["positions"] = list(self.positions)
        d["mask_value"] = None if self.mask_value is None else list(self.mask_value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, trust_code: bool = False) -> "JobSpec":
        """A spec read back from JSON; its model spec is untrusted (an ``import:`` model will not
        load) unless ``trust_code=True`` (:class:`~overinterp.models.ModelSpec`)."""
        d = dict(d)
        d["model"] = ModelSpec.from_dict(d["model"], trust_code=trust_code)
        d["positions"] = tuple(d["positions"])
        if d.get("mask_value") is not None:
            d["mask_value"] = tuple(d["mask_value"])
        return cls(**d)
