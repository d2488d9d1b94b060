"""No code from data: an ``import:`` model spec read from a file never runs without ``trust_code``.

The attack (issue 26): a copied run folder whose ``manifest.json`` names
``import:subprocess:getoutput`` with ``cmd="touch pwned"``. Every reader of run folders —
``report``, ``subsets evaluate``, ``audit`` resume, ``human build`` and the shard worker that Ray
runs — must leave no ``pwned`` behind. Wrong implementations these tests catch: a reader that
calls ``ModelSpec.from_dict(...).load()`` without the trust check (the file appears); a trust
flag that defaults to ``True`` for specs read back from JSON; a flag that is not carried to the
worker (a typed ``import:`` spec then fails in its own job); a non-module return value that
surfaces as a ``TypeError`` traceback instead of a one-line error.
"""

from __future__ import annotations

import json
import shutil

import pytest

from jobkit import make_spec, write_dataset, write_model
from overinterp.cli import main
from overinterp.jobs import JobSpec, load_job, run_job
from overinterp.jobs.shard import ShardTask, run_shard
from overinterp.models import ModelSpec, parse_model_spec
from overinterp.models.spec import UntrustedCodeError

NET = '''
import torch
from torch import nn


def Net(width=4):
    """A tiny 3-class CNN on 8x8 images, built by a function (an import: target), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 3))
'''


def attack(pwned) -> dict:
    return {"name": "import:subprocess:getoutput", "options": {"cmd": f"touch {pwned}"}}


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """A finished 4-image job of a checkpoint model (the folder a colleague shares)."""
    root = tmp_path_factory.mktemp("job")
    model, data = write_model(root / "m.pt"), write_dataset(root / "d.npz", n=4)
    import overinterp

    run_job(make_spec(model, data, n=4, method=overinterp.KStep(16)), root / "job", progress=False, log=lambda _: None)
    return root / "job", model, data


def poisoned_copy(finished_job, tmp_path):
    job, _, _ = finished_job
    run = tmp_path / "run"
    shutil.copytree(job, run / "job")
    manifest = json.loads((run / "job" / "manifest.json").read_text())
    manifest["spec"]["model"] = attack(tmp_path / "pwned")
    (run / "job" / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_a_spec_read_back_from_json_is_untrusted(tmp_path):
    spec = ModelSpec.from_dict(attack(tmp_path / "pwned"))
    with pytest.raises(UntrustedCodeError, match=r"opt in with trust_code=True"):
        spec.load()
    with pytest.raises(UntrustedCodeError):
        parse_model_spec(f"import:subprocess:getoutput?cmd=touch {tmp_path / 'pwned'}").load()
    assert not (tmp_path / "pwned").exists()
    assert spec.to_dict() == ModelSpec.from_dict(attack(tmp_path / "pwned"), trust_code=True).to_dict()
    assert "trust_code" not in spec.to_dict()
    with pytest.raises(ValueError, match="unknown fields"):
        ModelSpec.from_dict({"name": "smallcnn", "trust_code": True})


def test_trusted_import_that_returns_no_module_is_one_line(capsys, tmp_path):
    spec = parse_model_spec("import:collections:OrderedDict", trust_code=True)
    with pytest.raises(ValueError, match="returned a OrderedDict, not a torch.nn.Module"):
        spec.load()
    data = write_dataset(tmp_path / "d.npz", n=4)
    rc = main(["evaluate", "--model", "import:collections:OrderedDict", "--dataset", f"{data}:test"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a torch.nn.Module" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_does_not_run_the_manifest(finished_job, tmp_path):
    run = poisoned_copy(finished_job, tmp_path)
    main(["report", str(run), "--out", str(tmp_path / "rep")])
    assert not (tmp_path / "pwned").exists()


def test_subsets_evaluate_does_not_run_the_manifest(finished_job, tmp_path, capsys):
    run = poisoned_copy(finished_job, tmp_path)
    assert main(["subsets", "evaluate", "--job", str(run / "job")]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_human_build_does_not_run_the_manifest(finished_job, tmp_path):
    run = poisoned_copy(finished_job, tmp_path)
    main(["human", "build", "--out", str(tmp_path / "study"), "--model", "m", str(run / "job"), "--per-class", "1"])
    assert not (tmp_path / "pwned").exists()


def test_the_worker_does_not_run_a_spec_it_was_sent(finished_job, tmp_path):
    """What a Ray worker calls (``run_shard``) with the spec dict of a poisoned manifest."""
    job, _, _ = finished_job
    manifest = json.loads((job / "manifest.json").read_text())
    spec = dict(manifest["spec"], model=attack(tmp_path / "pwned"))
    task = ShardTask(spec, 0, str(tmp_path / "out"), {"model_fingerprint": "0" * 16})
    with pytest.raises(UntrustedCodeError):
        run_shard(task)
    with pytest.raises(UntrustedCodeError):
        load_job(poisoned_copy(finished_job, tmp_path) / "job").load_model()
    assert not (tmp_path / "pwned").exists()


def test_audit_resume_uses_the_typed_model_only(finished_job, tmp_path):
    _, model, data = finished_job
    out = tmp_path / "audit"
    args = ["audit", str(model), f"{data}:test", "--out", str(out), "--images", "4", "--method", "exact"]
    args += ["--threads", "1", "--no-progress", "--probe-seconds", "0.1"]
    assert main(args) == 0
    manifest = json.loads((out / "job" / "manifest.json").read_text())
    manifest["spec"]["model"] = attack(tmp_path / "pwned")
    (out / "job" / "manifest.json").write_text(json.dumps(manifest))
    (out / "audit.json").unlink()
    main(args)
    assert not (tmp_path / "pwned").exists()


def test_a_typed_import_model_runs_its_job_and_opt_in_reads_it_back(tmp_path, monkeypatch, capsys):
    """The typed spec is trusted all the way into the worker; reading the folder back needs --trust-code."""
    (tmp_path / "tinynet.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_dataset(tmp_path / "d.npz", n=4)
    job = tmp_path / "job"
    rc = main(
        ["backselect-dataset", "--model", "import:tinynet:Net?width=4", "--dataset", f"{data}:test"]
        + ["--out", str(job), "--method", "kstep", "--k", "16", "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    spec = JobSpec.from_dict(json.loads((job / "manifest.json").read_text())["spec"])
    assert spec.model.kind == "import" and not spec.model.trust_code
    assert main(["subsets", "evaluate", "--job", str(job)]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert main(["subsets", "evaluate", "--job", str(job), "--trust-code"]) == 0
