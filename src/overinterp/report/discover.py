"""Find a run folder's inputs: every dataset job (``manifest.json`` of format
``overinterp-backselect-job``) under it, and ``results.csv`` at its top."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overinterp.errors import UserInputError
from overinterp.jobs import JobOutput, load_job

__all__ = ["JobEntry", "RunInputs", "discover", "JOB_FORMAT"]

JOB_FORMAT = "overinterp-backselect-job"


@dataclass
class JobEntry:
    """One job folder: its loaded output, or why it could not be read."""

    path: Path
    manifest: dict[str, Any]
    job: JobOutput | None = None
    error: str | None = None
    label: str = ""

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("identity", {}).get("model_name") or "?")

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("identity", {}).get("model_fingerprint") or "")

    @property
    def dataset(self) -> str:
        return str(self.manifest.get("spec", {}).get("dataset") or "?")

    @property
    def dataset_label(self) -> str:
        """The dataset spec without folders (``/a/b/test.npz`` → ``test.npz``)."""
        d = self.dataset
        head, at, _ = d.partition("@")
        name = head if at else d
        return Path(name).name if ("/" in name or os.sep in name) else name

    @property
    def model_spec(self) -> dict[str, Any]:
        return dict(self.manifest.get("spec", {}).get("model") or {})

    @property
    def is_ensemble(self) -> bool:
        return str(self.model_spec.get("name") or "").lower().endswith(".json")

    @property
    def positions(self) -> list[int]:
        return list(self.manifest.get("spec", {}).get("positions") or [])


@dataclass
class RunInputs:
    """What a run folder holds."""

    run_dir: Path
    jobs: list[JobEntry] = field(default_factory=list)
    results_path: Path | None = None
    results: list[dict[str, Any]] | None = None
    results_error: str | None = None

    @property
    def loaded(self) -> list[JobEntry]:
        return [j for j in self.jobs if j.job is not None]


def _labels(jobs: list[JobEntry]) -> None:
    """Model labels: the model's name, plus its checkpoint's folder or stem where two
    different models share a name."""
    by_name: dict[str, set[str]] = {}
    for j in jobs:
        by_name.setdefault(j.model_name, set()).add(j.fingerprint)
    for j in jobs:
        label = j.model_name
        if len(by_name[label]) > 1:
            ckpt = j.model_spec.get("checkpoint") or j.model_spec.get("name") or ""
            p = Path(str(ckpt))
            extra = p.parent.name if p.stem in ("model", "checkpoint") else p.stem
            label = f"{label} ({extra or j.fingerprint[:8]})"
        j.label = label
    # the same model on the same dataset by several methods: name the method too
    groups: dict[tuple[str, str], list[JobEntry]] = {}
    for j in jobs:
        groups.setdefault((j.label, j.dataset), []).append(j)
    for same in groups.values():
        if len(same) > 1:
            for j in same:
                j.label = f"{j.label} · {_method_tag(j.manifest)}"


def _method_tag(manifest: dict[str, Any]) -> str:
    """Short method description: ``exact``, ``exact, p-rank``, ``gradient k=8``, ``adaptive/gradient``, ``2×2 px``."""
    spec = manifest.get("spec", {})
    method = spec.get("method") or {}
    name, params = method.get("name", "?"), method.get("params") or {}
    tag = name
    if name == "exact" and params.get("rank_by") == "probability":
        tag += ", p-rank"
    elif name in ("gradient", "kstep") and "k" in params:
        tag += f" k={params['k']}"
    elif name == "adaptive":
        tag += f"/{params.get('head', 'kstep')}"
    patch = int(spec.get("patch") or 1)
    if patch > 1:
        tag += f", {patch}×{patch} px"
    n = len(spec.get("positions") or [])
    return f"{tag}, {n} img"


def discover(run_dir: str | os.PathLike[str], *, exclude: Path | None = None, trust_code: bool = False) -> RunInputs:
    """Read every job under ``run_dir`` (partial jobs: their complete shards) and the results file.

    ``trust_code``: whether the manifests' ``import:`` model specs may run their code."""
    from overinterp.results import read_results

    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder at {root}")
    inputs = RunInputs(root)
    skip = exclude.resolve() if exclude is not None else None
    for manifest in sorted(root.rglob("manifest.json")):
        if skip is not None and skip in manifest.resolve().parents:
            continue
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            # a job whose manifest cannot be read is an error naming it, not an absent job
            raise UserInputError(
                f"cannot read {manifest}: {type(exc).__name__}: {exc} — is the job folder {manifest.parent} "
                "corrupt? Rerun its backselect-dataset command, or move the folder out of the run folder"
            ) from None
        if not isinstance(m, dict) or m.get("format") != JOB_FORMAT:
            continue
        entry = JobEntry(manifest.parent, m)
        try:
            entry.job = load_job(manifest.parent, allow_partial=True, trust_code=trust_code)
        except (ValueError, FileNotFoundError, OSError, KeyError) as exc:
            entry.error = str(exc)
        inputs.jobs.append(entry)
    _labels(inputs.jobs)
    results = root / "results.csv"
    if results.is_file():
        inputs.results_path = results
        try:
            inputs.results = read_results(results)
        except (ValueError, OSError) as exc:
            inputs.results_error = str(exc)
    return inputs
