"""A dataset job's identity — what must match for files to belong to one job — built and compared once.

* :func:`job_identity` builds it (the manifest's ``identity``): the spec's
  identity fields (:attr:`JobSpec.IDENTITY <overinterp.jobs.spec.JobSpec>`), the model's
  fingerprint (:func:`~overinterp.results.model_fingerprint`: weights,
  preprocessing, baseline), the images' fingerprint
  (:func:`~overinterp.data.fingerprint.data_fingerprint`, the one training uses
  too) over all positions and per shard, image shape, classes, baseline, features.
* :func:`shard_identity` is the part of it one shard carries (in its commit
  record and its payload): a projection of the job's identity, never built apart.
* :func:`differences` compares two identities (or any nested dicts of plain
  values) and :func:`describe` words one difference — the one wording of every
  "this folder holds something else" message: ``model 1a2b…, this job's model is 9f8e…``.

The dicts are plain JSON values (tuples become lists), so identities read back
from files compare equal to fresh ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from overinterp.data.fingerprint import data_fingerprint
from overinterp.jobs.spec import JobSpec

__all__ = [
    "data_fingerprint",
    "job_identity",
    "shard_identity",
    "baseline_identity",
    "Difference",
    "differences",
    "describe",
    "describe_differences",
]


def plain(v: Any) -> Any:
    """JSON round trip: tuples and lists compare equal, keys sorted."""
    return json.loads(json.dumps(v, sort_keys=True))


def _digest(v: Any) -> str | None:
    return None if v is None else hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]


def _features(patch: int) -> dict[str, Any]:
    return {"type": "pixels" if patch == 1 else "patches", "patch": patch}


def baseline_identity(spec: JobSpec, model: Any) -> list[float] | None:
    """The baseline the identity records: the model's own (flattened), or ``None``
    when the job gives ``mask_value`` or the model has none."""
    baseline = getattr(model, "baseline", None)
    return None if spec.mask_value is not None or baseline is None else baseline.flatten().tolist()


def job_identity(spec: JobSpec, model: Any, data: Any) -> dict[str, Any]:
    """The identity of the job ``spec`` over ``model`` and the dataset ``data`` (``.images`` uint8
    ``(N, C, H, W)``, ``.labels`` ``(N,)``, ``.classes``), as the manifest records it.

    Raises:
        ValueError: the spec's positions reach beyond the dataset.
    """
    from overinterp.results import model_fingerprint

    idx = torch.tensor(spec.positions)
    if int(idx.max()) >= len(data) or int(idx.min()) < 0:
        raise ValueError(f"positions reach {int(idx.max())} but {spec.dataset} has {len(data)} images")
    d = spec.to_dict()
    shard_fps = []
    for s in range(spec.num_shards):
        at = torch.tensor(spec.shard_positions(s))
        shard_fps.append(data_fingerprint(data.images[at], data.labels[at]))
    return plain(
        {
            "spec": {k: d[k] for k in JobSpec.IDENTITY} | {"extra": spec.identity_extra},
            "model_fingerprint": model_fingerprint(model),
            "model_name": getattr(model, "name", type(model).__name__),
            "data_fingerprint": data_fingerprint(data.images[idx], data.labels[idx]),
            "shard_data_fingerprints": shard_fps,
            "image_shape": list(data.images.shape[1:]),
            "classes": data.classes,
            "baseline": baseline_identity(spec, model),
            "features": _features(spec.patch),
            "num_images": len(spec.positions),
            "num_shards": spec.num_shards,
        }
    )


def shard_identity(identity: dict[str, Any], shard: int) -> dict[str, Any]:
    """What makes ``shard`` a shard of the job whose :func:`job_identity` is ``identity``.

    A manifest written before per-shard image fingerprints were recorded gives
    ``data_fingerprint: None`` (then not compared)."""
    s = identity["spec"]
    size = int(s["shard_size"])
    fps = identity.get("shard_data_fingerprints") or []
    return plain(
        {
            "shard": shard,
            "model_fingerprint": identity["model_fingerprint"],
            "data_fingerprint": fps[shard] if shard < len(fps) else None,
            "positions": list(s["positions"])[shard * size : (shard + 1) * size],
            "method": s["method"],
            "features": _features(int(s.get("patch", 1))),
            "baseline": _digest(identity.get("baseline")),
            "mask_value": s.get("mask_value"),
            "dtype": s["dtype"],
            "shard_size": size,
            "extra": s.get("extra", {}),
        }
    )


# --------------------------------------------------------------------------- differences

#: what each identity key is called in messages, in the order differences are listed
#: (a manifest's ``spec.X`` is called like ``X``)
NAMES = {
    "model_fingerprint": "model",
    "data_fingerprint": "images",
    "shard_data_fingerprints": "images per shard",
    "positions": "positions",
    "method": "method",
    "features.type": "features",
    "features.patch": "patch size",
    "patch": "patch size",
    "baseline": "baseline",
    "mask_value": "mask value",
    "dtype": "dtype",
    "shard_size": "shard size",
    "extra": "extra identity",
    "shard": "shard number",
    "image_shape": "image shape",
    "classes": "classes",
    "num_images": "number of images",
    "num_shards": "number of shards",
}
#: values compared whole (shown as JSON), not key by key
_LEAVES = ("method", "extra")


@dataclass(frozen=True)
class Difference:
    """One key where two identities differ: ``key`` its dotted path, ``what`` its name in messages."""

    key: str
    what: str
    found: Any
    expected: Any


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in _LEAVES:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _name(key: str) -> str:
    bare = key[5:] if key.startswith("spec.") else key
    return NAMES.get(bare, bare)


def _show(v: Any) -> str:
    if isinstance(v, str) and len(v) > 20:
        return v[:16] + "…"
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(str, v[:3]))}, … {len(v)} items]"
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _method_value(v: Any) -> Any:
    """A recorded method description as today's code reads it: a parameter added after the file was
    written takes the value its absence means (``method_from_description``), so a folder written
    before it compares equal to the same settings given today, and unequal to today's defaults."""
    if not (isinstance(v, dict) and isinstance(v.get("name"), str)):
        return v
    from overinterp.sis.methods import method_from_description

    try:
        return plain(method_from_description(v).describe())
    except Exception:  # noqa: BLE001  (an unknown method or bad parameters: compared as written)
        return v


def differences(
    found: dict[str, Any],
    expected: dict[str, Any],
    *,
    common_only: bool = False,
    ignore: tuple[str, ...] = (),
    alternatives: dict[str, list[Any]] | None = None,
) -> list[Difference]:
    """Every leaf key where the nested dicts ``found`` (what a file holds) and ``expected`` (what this
    run would write) differ, in :data:`NAMES` order.

    Args:
        common_only: compare only keys both hold (a legacy shard records less).
        ignore: dotted keys never compared (e.g. ``model_name``: a display name).
        alternatives: per key, more values ``found`` may hold and still match.
    """
    f, e = _flat(plain(found)), _flat(plain(expected))
    for flat in (f, e):
        for k in flat:
            if k == "method" or k.endswith(".method"):
                flat[k] = _method_value(flat[k])
    keys = [k for k in e if k in f] if common_only else sorted(set(f) | set(e))
    order = list(NAMES)

    def rank(k: str) -> int:
        bare = k[5:] if k.startswith("spec.") else k
        return order.index(bare) if bare in order else len(order)

    out = []
    for key in sorted((k for k in keys if k not in ignore), key=rank):
        a, b = f.get(key), e.get(key)
        if a != b and a not in (alternatives or {}).get(key, []):
            out.append(Difference(key, _name(key), a, b))
    return out


def describe(d: Difference, whose: str = "this job's") -> str:
    """``"model 1a2b…, this job's model is 9f8e…"`` (follows "…was written for")."""
    return f"{d.what} {_show(d.found)}, {whose} {d.what} is {_show(d.expected)}"


def describe_differences(found: Any, expected: Any, *, whose: str = "this job's", **options: Any) -> list[str]:
    """:func:`describe` of each of :func:`differences` ``(found, expected, **options)``."""
    return [describe(d, whose) for d in differences(found, expected, **options)]
