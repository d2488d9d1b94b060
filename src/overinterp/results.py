"""One long-format results file for every experiment, and the paper's Table 1 from it.

**Format** (CSV, UTF-8, one header line; schema version :data:`RESULTS_SCHEMA_VERSION`):
one row per model × train-on × evaluate-on × dataset × seed × metric.

=============== ==========================================================================
column          meaning
=============== ==========================================================================
schema_version  :data:`RESULTS_SCHEMA_VERSION` of the writer
recorded_at     UTC time, ISO 8601
experiment      free label of the run that wrote the row (e.g. ``table1``)
model           display name, the row label of tables (``resnet20``, ``ensemble:resnet18x5``)
arch            registry architecture (``ensemble`` for ensembles)
fingerprint     :func:`model_fingerprint`: hash of weights, buffers and preprocessing
checkpoint      file the model came from (checkpoint or ensemble JSON), may be empty
train_on        what the model was trained on (``full``; later: ``bs5``, ``random5`` …)
evaluate_on     what it is evaluated on (``full``; later: pixel subsets)
dataset         canonical dataset key (``cifar10:test``, ``cifar10.1:v6``, ``cifar10c:all``,
                ``cifar10c:fog/5``, ``folder:test``)
seed            replicate seed of the model (empty for ensembles or unknown)
metric          ``accuracy`` (fraction correct), ``loss`` …
value           the number (float)
n               number of images the value is over
notes           free text
=============== ==========================================================================

:func:`append_results` appends under a lock and replaces the file atomically
(copy + new rows → temporary file → rename), so concurrent writers never
interleave and a killed writer never leaves half a row. Readers refuse a file of
a newer schema version.

:func:`render_table` turns the rows into the paper's Table 1 layout — rows
model × train on × evaluate on, columns CIFAR-10 / CIFAR-10.1 / CIFAR-10-C,
cells mean ± standard deviation over seeds — as Markdown or CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from overinterp._atomic import atomic_write_bytes
from overinterp._locking import exclusive_lock

__all__ = [
    "RESULTS_SCHEMA_VERSION",
    "RESULT_COLUMNS",
    "TABLE1_DATASETS",
    "make_row",
    "append_results",
    "read_results",
    "model_fingerprint",
    "summarize",
    "render_table",
]

RESULTS_SCHEMA_VERSION = 1
RESULT_COLUMNS = (
    "schema_version",
    "recorded_at",
    "experiment",
    "model",
    "arch",
    "fingerprint",
    "checkpoint",
    "train_on",
    "evaluate_on",
    "dataset",
    "seed",
    "metric",
    "value",
    "n",
    "notes",
)
_REQUIRED = ("model", "dataset", "metric", "value")

#: The dataset columns of Table 1: dataset key → header.
TABLE1_DATASETS: dict[str, str] = {
    "cifar10:test": "CIFAR-10 test",
    "cifar10.1:v6": "CIFAR-10.1",
    "cifar10c:all": "CIFAR-10-C",
    "cifar10c:sample": "CIFAR-10-C sample",
}


# --------------------------------------------------------------------------- fingerprint


def model_fingerprint(model: nn.Module, length: int = 16) -> str:
    """A hex hash (``length`` characters) of what determines a model's outputs.

    Covers every state-dict tensor (name, dtype, shape, bytes — weights and
    BatchNorm statistics; ``num_batches_tracked`` counters, which do not change
    outputs, are left out), the preprocessing config and the masking baseline
    of a :class:`~overinterp.Classifier`, and for an ensemble its members'
    fingerprints in order. Two models with the same fingerprint compute the same
    function; any change to a weight changes it.
    """
    h = hashlib.sha256()
    members = getattr(model, "members", None)
    if members is not None and hasattr(model, "combine"):
        h.update(b"ensemble:" + str(model.combine).encode())
        for m in members:
            h.update(model_fingerprint(m, 64).encode())
    else:
        config = getattr(model, "preprocessing_config", None)
        if callable(config):
            try:
                h.update(json.dumps(config(), sort_keys=True).encode())
            except TypeError:  # a preprocessing module without config(): its buffers are in the state dict
                h.update(type(model.preprocessing).__name__.encode())
        for name, tensor in sorted(model.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                continue
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # reshape: 0-dim buffers
    baseline = getattr(model, "baseline", None)
    if isinstance(baseline, torch.Tensor):
        h.update(b"baseline:" + json.dumps(baseline.detach().cpu().tolist()).encode())
    return h.hexdigest()[:length]


# --------------------------------------------------------------------------- rows


def make_row(**fields: Any) -> dict[str, str]:
    """A validated result row (all values as CSV strings); unknown columns are errors.

    Required: ``model``, ``dataset``, ``metric``, ``value``. ``recorded_at`` and
    ``schema_version`` are filled in; ``train_on``/``evaluate_on`` default to ``full``.
    """
    unknown = sorted(set(fields) - set(RESULT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown result columns {unknown}; the columns are {list(RESULT_COLUMNS)}")
    missing = [k for k in _REQUIRED if fields.get(k) in (None, "")]
    if missing:
        raise ValueError(f"a result row needs {', '.join(missing)}")
    value = fields["value"]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"result value must be a number, got {value!r}") from None
    row = {k: "" for k in RESULT_COLUMNS}
    row.update({"train_on": "full", "evaluate_on": "full"})
    for k, v in fields.items():
        row[k] = "" if v is None else str(v)
    row["value"] = repr(value)
    row["schema_version"] = str(RESULTS_SCHEMA_VERSION)
    if not row["recorded_at"]:
        row["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for k in ("seed", "n"):
        if row[k]:
            try:
                row[k] = str(int(row[k]))
            except ValueError:
                raise ValueError(f"result column {k} must be an integer, got {row[k]!r}") from None
    return row


def _check_header(header: Sequence[str], path: Path) -> None:
    if list(header) != list(RESULT_COLUMNS):
        raise ValueError(
            f"{path} is not an overinterp results file of schema {RESULTS_SCHEMA_VERSION}: its header is "
            f"{list(header)[:6]}…; expected {list(RESULT_COLUMNS)}"
        )


def append_results(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows (dicts for :func:`make_row`, or rows it made) to ``path``; return how many.

    Creates the file (with its header) if needed. The whole file is rewritten to
    a temporary file and renamed into place while holding ``<path>.lock``
    (:func:`overinterp._locking.exclusive_lock`: removed when done, also when the
    file is refused).
    """
    target = Path(path)
    new = [r if set(r) == set(RESULT_COLUMNS) and r.get("schema_version") else make_row(**r) for r in rows]
    if not new:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(target.name + ".lock"), what=f"results file {target}"):
        existing = b""
        if target.exists():
            existing = target.read_bytes()
            if existing:
                header = next(csv.reader(io.StringIO(existing.decode("utf-8").split("\n", 1)[0])))
                _check_header(header, target)
                _check_versions(existing.decode("utf-8"), target)
                if not existing.endswith(b"\n"):
                    existing += b"\n"
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        if not existing:
            writer.writeheader()
        writer.writerows(new)
        atomic_write_bytes(target, existing + buffer.getvalue().encode("utf-8"))
    return len(new)


def _check_versions(text: str, path: Path) -> None:
    for row in csv.DictReader(io.StringIO(text)):
        version = row.get("schema_version") or ""
        if version.isdigit() and int(version) > RESULTS_SCHEMA_VERSION:
            raise ValueError(
                f"{path} has rows of results schema {version}, newer than this overinterp "
                f"({RESULTS_SCHEMA_VERSION}); upgrade overinterp"
            )


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a results file; ``value`` as float, ``seed``/``n`` as int or ``None``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no results file at {p}")
    text = p.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    _check_header(reader.fieldnames or [], p)
    out = []
    for line, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise ValueError(f"{p}, line {line}: expected {len(RESULT_COLUMNS)} fields")
        version = row["schema_version"]
        if not version.isdigit() or int(version) > RESULTS_SCHEMA_VERSION:
            raise ValueError(f"{p}, line {line}: schema version {version!r} is not one this overinterp reads")
        try:
            parsed: dict[str, Any] = dict(row)
            parsed["value"] = float(row["value"])
            parsed["seed"] = int(row["seed"]) if row["seed"] else None
            parsed["n"] = int(row["n"]) if row["n"] else None
        except ValueError as exc:
            raise ValueError(f"{p}, line {line}: {exc}") from None
        out.append(parsed)
    return out


# --------------------------------------------------------------------------- tables


def summarize(rows: Iterable[Mapping[str, Any]], metric: str = "accuracy") -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds, per model × train_on × evaluate_on × dataset.

    Of repeated rows for one seed (same model, fingerprint … dataset, seed), the
    last one counts. The standard deviation is the sample one (``ddof = 1``; 0
    for one seed). Groups keep the order in which they first appear.
    """
    latest: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        if r["metric"] != metric:
            continue
        seed = r.get("seed")
        # Rows without a seed are distinct replicates only if their models differ.
        replicate = seed if seed not in (None, "") else r.get("fingerprint") or len(latest)
        key = (r["model"], r.get("train_on") or "full", r.get("evaluate_on") or "full", r["dataset"], replicate)
        latest.pop(key, None)
        latest[key] = r
    groups: dict[tuple, list[float]] = {}
    for (model, train_on, evaluate_on, dataset, _), r in latest.items():
        groups.setdefault((model, train_on, evaluate_on, dataset), []).append(float(r["value"]))
    out = []
    for (model, train_on, evaluate_on, dataset), values in groups.items():
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        out.append(
            {
                "model": model,
                "train_on": train_on,
                "evaluate_on": evaluate_on,
                "dataset": dataset,
                "mean": mean,
                "std": std,
                "replicates": n,
            }
        )
    return out


def _pretty(value: str) -> str:
    return {"full": "Full images"}.get(value, value)


def render_table(
    rows: Iterable[Mapping[str, Any]],
    fmt: str = "markdown",
    *,
    metric: str = "accuracy",
    datasets: Mapping[str, str] | Sequence[str] | None = None,
    percent: bool = True,
    digits: int = 2,
    experiments: Sequence[str] | None = None,
) -> str:
    """The paper's Table 1 layout: one line per model × train on × evaluate on,
    one column per dataset (default CIFAR-10 test, CIFAR-10.1, CIFAR-10-C, then
    any other dataset present), cells ``mean ± std`` over seeds (in percent).

    ``fmt="csv"`` gives the same table machine-readable, with ``<dataset> mean``,
    ``<dataset> std`` and ``<dataset> replicates`` columns (fractions, not percent).
    ``experiments``: only rows of these experiments (e.g. ``["table1"]``).
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    if experiments:
        wanted = set(experiments)
        rows = [r for r in rows if r.get("experiment", "") in wanted]
    summary = summarize(rows, metric)
    if datasets is None:
        present = list(dict.fromkeys(s["dataset"] for s in summary))
        columns = {k: v for k, v in TABLE1_DATASETS.items() if k in present}
        for d in present:  # then other datasets, but not CIFAR-10-C's per-corruption blocks
            if d not in columns and not (d.startswith("cifar10c:") and d != "cifar10c:sample"):
                columns[d] = d
        columns = columns or dict(TABLE1_DATASETS)
    elif isinstance(datasets, Mapping):
        columns = dict(datasets)
    else:
        columns = {d: TABLE1_DATASETS.get(d, d) for d in datasets}
    lines: dict[tuple, dict[str, dict[str, Any]]] = {}
    for s in summary:
        lines.setdefault((s["model"], s["train_on"], s["evaluate_on"]), {})[s["dataset"]] = s
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["model", "train_on", "evaluate_on"]
        for d in columns:
            header += [f"{d} mean", f"{d} std", f"{d} replicates"]
        writer.writerow(header)
        for (model, train_on, evaluate_on), cells in lines.items():
            line: list[Any] = [model, train_on, evaluate_on]
            for d in columns:
                c = cells.get(d)
                line += ["", "", ""] if c is None else [f"{c['mean']:.6g}", f"{c['std']:.6g}", c["replicates"]]
            writer.writerow(line)
        return buffer.getvalue()
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    header = ["Model", "Train on", "Evaluate on"] + [f"{title}{unit}" for title in columns.values()]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(columns)) + "|"]
    for (model, train_on, evaluate_on), cells in lines.items():
        text = []
        for d in columns:
            c = cells.get(d)
            if c is None:
                text.append("—")
            elif c["replicates"] > 1:
                text.append(f"{scale * c['mean']:.{digits}f} ± {scale * c['std']:.{digits}f} (n={c['replicates']})")
            else:
                text.append(f"{scale * c['mean']:.{digits}f}")
        out.append("| " + " | ".join([model, _pretty(train_on), _pretty(evaluate_on)] + text) + " |")
    out.append("")
    out.append(f"{metric}; mean ± sample standard deviation over n replicate seeds where n > 1.")
    return "\n".join(out) + "\n"
