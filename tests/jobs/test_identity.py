"""One job identity: one builder (shards carry a projection of it), one wording of differences,
one data fingerprint that training and jobs share — and that existing run folders still match."""

from __future__ import annotations

import json

import pytest
import torch

import overinterp
from jobkit import make_spec, write_dataset, write_model
from overinterp.data import open_dataset
from overinterp.data.fingerprint import data_fingerprint
from overinterp.jobs import JobMismatchError, job_identity, run_job, shard_identity, shard_paths
from overinterp.jobs.identity import describe_differences, differences
from overinterp.jobs.shard import load_job_inputs
from overinterp.models import load_checkpoint_file
from overinterp.training import trainer
from overinterp.training.trainer import make_config, train_classifier

#: ``data_fingerprint`` of jobkit's default dataset: what every job manifest and shard has recorded
#: since 0.1 (computed with 0.2's ``jobs.spec.images_fingerprint``)
PINNED = "a9fc33807b25eafb"


def test_the_fingerprint_is_the_one_job_folders_recorded(tmp_path):
    """Guards against changing the hashed bytes (every existing job folder would then be refused as
    another dataset's) and against a label dtype changing a dataset's identity."""
    data = open_dataset(f"{write_dataset(tmp_path / 'd.npz')}:test")
    assert data_fingerprint(data.images, data.labels) == PINNED
    assert data_fingerprint(data.images, data.labels.to(torch.uint8)) == PINNED
    assert data_fingerprint(data.images, data.labels[:-1]) != PINNED
    other = data.images.clone()
    other[0, 0, 0, 0] ^= 1
    assert data_fingerprint(other, data.labels) != PINNED
    assert data_fingerprint(data.images.float(), data.labels) != PINNED  # float pixels are other bytes


def test_training_and_jobs_agree_on_a_datasets_identity(tmp_path):
    """The training checkpoint records the same fingerprint the job manifest does for the same images.
    Guards against the two hashing different bytes again (0.2: the trainer hashed the labels' own dtype
    under another header, so one dataset had two identities)."""
    model, path = write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")
    data = open_dataset(f"{path}:test")
    run_job(make_spec(model, path, method=overinterp.KStep(16)), tmp_path / "job", progress=False, log=lambda _: None)
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    config = make_config("paper", arch="smallcnn", arch_kwargs={"width": 4}, epochs=1, batch_size=6, milestones=(1,))
    train_classifier(config, (data.images, data.labels.to(torch.uint8)), out_dir=tmp_path / "run", progress=False)
    recorded = load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")["extra"]["data"]
    assert recorded == manifest["identity"]["data_fingerprint"] == PINNED


def test_a_training_run_of_the_old_fingerprint_still_resumes(tmp_path, monkeypatch):
    """A checkpoint written before the fingerprints were one (it holds 0.2's value) resumes without
    --force; other data is still refused. Guards against orphaning every existing training run."""
    data = open_dataset(f"{write_dataset(tmp_path / 'd.npz')}:test")
    config = make_config("paper", arch="smallcnn", arch_kwargs={"width": 4}, epochs=2, batch_size=6, milestones=(1,))

    def stop_after_epoch_1(event, info):
        if event == "step" and info["epoch"] == 2:
            raise KeyboardInterrupt  # interrupted in epoch 2: the checkpoint of epoch 1 stays

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(trainer, "data_fingerprint", trainer._fingerprint_before_0_3)  # as 0.2 wrote it
        train_classifier(
            config, (data.images, data.labels), out_dir=tmp_path / "run", progress=False, callback=stop_after_epoch_1
        )
    old = load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")["extra"]["data"]
    assert old != PINNED
    result = train_classifier(config, (data.images, data.labels), out_dir=tmp_path / "run", progress=False)
    assert result.resumed_from == 1
    assert load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")["extra"]["data"] == PINNED  # rewritten as now
    other = data.images.clone()
    other[0] ^= 1
    with pytest.raises(ValueError, match="training data: fingerprint"):
        train_classifier(config, (other, data.labels), out_dir=tmp_path / "run", progress=False)


def test_every_shard_carries_a_projection_of_the_manifests_identity(tmp_path):
    """What the workers wrote equals ``shard_identity(manifest identity, s)`` for every shard, and the
    manifest's identity is ``job_identity`` of the inputs. Guards against a shard identity built apart
    from the job's (a field added to one and not the other)."""
    model, path = write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")
    spec = make_spec(model, path, method=overinterp.KStep(16), shard_size=5)  # 12 images: shards of 5, 5, 2
    run_job(spec, tmp_path / "job", progress=False, log=lambda _: None)
    identity = json.loads((tmp_path / "job" / "manifest.json").read_text())["identity"]
    assert identity == job_identity(spec, *load_job_inputs(spec))
    for s in range(3):
        record = json.loads(shard_paths(tmp_path / "job", s)[1].read_text())
        payload = overinterp.BackselectTrace.load(shard_paths(tmp_path / "job", s)[0])
        assert record["identity"] == payload.meta["job_identity"] == shard_identity(identity, s)
    assert shard_identity(identity, 2)["positions"] == [10, 11]


def test_one_wording_for_every_difference(tmp_path):
    """The manifest's refusal, a foreign shard's and the audit's read the same way."""
    model, path = write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")
    out = tmp_path / "job"
    run_job(make_spec(model, path, method=overinterp.KStep(16)), out, progress=False, log=lambda _: None)
    other = write_model(tmp_path / "other.pt", seed=1)
    with pytest.raises(JobMismatchError) as info:
        run_job(make_spec(other, path, method=overinterp.KStep(16)), out, progress=False, log=lambda _: None)
    a, b = (job_identity(make_spec(m, path), *load_job_inputs(make_spec(m, path))) for m in (model, other))
    assert f"written for model {a['model_fingerprint']}, this job's model is {b['model_fingerprint']}" in str(
        info.value
    )
    assert "model_name" not in str(info.value)  # a display name is no identity
    diffs = differences({"spec": {"positions": list(range(10)), "dtype": "float32"}}, {"spec": {"dtype": "float64"}})
    assert [d.what for d in diffs] == ["positions", "dtype"]  # NAMES order, manifest keys named like shard keys
    assert describe_differences({"images": 5}, {"images": 6}, whose="this run's") == [
        "images 5, this run's images is 6"
    ]
    assert describe_differences({"x": list(range(10))}, {"x": []}) == ["x [0, 1, 2, … 10 items], this job's x is []"]


def _drop_new_fast_params(d):
    """A method description as written before ``Fast``'s ``growth``/``first_block`` existed."""
    if isinstance(d, dict):
        if d.get("name") == "fast" and isinstance(d.get("params"), dict):
            d["params"] = {k: v for k, v in d["params"].items() if k not in ("growth", "first_block")}
        for v in d.values():
            _drop_new_fast_params(v)
    elif isinstance(d, list):
        for v in d:
            _drop_new_fast_params(v)
    return d


def test_a_folder_written_before_a_new_method_parameter_resumes_with_its_settings(tmp_path):
    """A job folder whose manifest, commit records and payloads describe ``fast`` without ``growth``
    (as before 0.5) resumes when given the settings it ran (``growth=0``), and is refused, naming the
    method, under today's default schedule. Wrong implementations caught: comparing descriptions as
    written (no setting could ever match the old folder, as today's descriptions always hold ``growth``),
    or filling the missing parameter with today's default (the old folder would then pass for the new
    schedule and mix two schedules in one job)."""
    model, path = write_model(tmp_path / "m.pt"), write_dataset(tmp_path / "d.npz")
    old_fast = overinterp.Fast(growth=0.0, recall=4, screened=0.08, width=4)
    spec = make_spec(model, path, method=old_fast, shard_size=6)
    out = tmp_path / "job"
    run_job(spec, out, progress=False, log=lambda _: None)
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps(_drop_new_fast_params(json.loads(manifest.read_text()))))
    for s in range(2):
        pt, rec = shard_paths(out, s)
        rec.write_text(json.dumps(_drop_new_fast_params(json.loads(rec.read_text()))))
        trace = overinterp.BackselectTrace.load(pt)
        _drop_new_fast_params(trace.meta)
        trace.method = _drop_new_fast_params(dict(trace.method))
        trace.save(pt)
    assert "growth" not in manifest.read_text()
    run_job(spec, out, progress=False, log=lambda _: None)  # the same settings: resumes (nothing left to do)
    with pytest.raises(JobMismatchError, match="method"):
        run_job(
            make_spec(model, path, method=overinterp.Fast(width=4), shard_size=6),
            out,
            progress=False,
            log=lambda _: None,
        )
