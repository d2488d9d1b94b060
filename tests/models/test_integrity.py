"""Files the project writes carry a content sha256 checked on load (issue 26, item 2).

Wrong implementations these tests catch: a seal that is written but never checked (the flipped
checkpoint loads and gives other logits); a seal over the metadata only, not the tensors' bytes
(a flipped weight passes); a trainer that resumes from ``checkpoint.pt`` through another reader;
a trace ``save`` without the seal; an old file without a seal refused (or, worse, silently
accepted without a warning); ``resnet20@`` read as "no checkpoint" (random weights).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from overinterp import Exact, backselect
from overinterp._atomic import SEAL_KEY, content_sha256
from overinterp.errors import IntegrityError
from overinterp.models import Classifier, create_model, load_checkpoint_file, parse_model_spec, save_checkpoint
from overinterp.models.classifier import Architecture
from overinterp.sis.trace import BackselectTrace


def flip_inside(path, tensor: torch.Tensor) -> None:
    """Flip one bit of ``tensor``'s bytes where they are stored in ``path``."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    data[at + len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def flip_largest_record(path) -> None:
    """Flip one bit in the middle of the largest tensor storage of a ``torch.save`` zip."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def small(seed=0) -> Classifier:
    torch.manual_seed(seed)
    return create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=4)


def test_a_flipped_weight_byte_is_an_error_naming_the_file(tmp_path):
    model = small()
    path = save_checkpoint(tmp_path / "m.pt", model, None)
    assert SEAL_KEY in torch.load(path, weights_only=True)
    weight = model.network.state_dict()["fc.weight"] if "fc.weight" in model.network.state_dict() else None
    weight = weight if weight is not None else next(v for v in model.network.state_dict().values() if v.numel() > 8)
    flip_inside(path, weight)
    for load in (
        lambda: load_checkpoint_file(path),
        lambda: create_model(None, checkpoint=path),
        lambda: parse_model_spec(str(path)).load(),
    ):
        with pytest.raises(IntegrityError, match=f"{path}.*corrupt"):
            load()


def test_old_checkpoints_load_with_a_warning_and_v2_without_seal_is_refused(tmp_path):
    model = small()
    path = save_checkpoint(tmp_path / "m.pt", model, None)
    d = torch.load(path, weights_only=True)
    del d[SEAL_KEY]
    torch.save(d, tmp_path / "noseal.pt")
    with pytest.raises(IntegrityError, match="no content hash"):
        load_checkpoint_file(tmp_path / "noseal.pt")
    d["format_version"] = 1
    torch.save(d, tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match="older overinterp without a content hash"):
        old = create_model(None, checkpoint=tmp_path / "v1.pt")
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(old(x), model(x))


def test_training_resume_refuses_a_flipped_checkpoint(tmp_path):
    from overinterp.training.trainer import make_config, train_classifier

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(12) % 3
    config = make_config("paper", arch="smallcnn", arch_kwargs={"width": 4}, epochs=2, batch_size=6, milestones=(1,))
    run = tmp_path / "run"
    train_classifier(config, (x, y), None, run, progress=False)
    ckpt = run / "checkpoint.pt"
    flip_largest_record(ckpt)
    with pytest.raises(IntegrityError, match="checkpoint.pt is corrupt"):
        train_classifier(config, (x, y), None, run, progress=False)


def test_traces_are_sealed(tmp_path):
    model = small()
    trace = backselect(model, torch.rand(1, 3, 6, 6), method=Exact(), progress=False)
    path = trace.save(tmp_path / "t.pt")
    assert torch.equal(BackselectTrace.load(path).order, trace.order)
    d = torch.load(path, weights_only=True)
    flip_inside(path, d["logodds"])
    with pytest.raises(IntegrityError, match="t.pt is corrupt"):
        BackselectTrace.load(path)
    del d[SEAL_KEY]
    torch.save(d, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="without a content hash"):
        BackselectTrace.load(tmp_path / "old.pt")


def test_the_content_hash_sees_every_byte_and_no_container_detail():
    a = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "meta": {"k": [1, 2.5, None]}}
    assert content_sha256(a) == content_sha256({"meta": {"k": (1, 2.5, None)}, "w": a["w"].clone()})
    b = {"w": a["w"].clone(), "meta": a["meta"]}
    b["w"].view(-1).view(torch.uint8)[3] ^= 1
    assert content_sha256(a) != content_sha256(b)
    assert content_sha256(a) != content_sha256({"w": a["w"].view(3, 2), "meta": a["meta"]})  # shape counts
    assert content_sha256({"x": 1}) != content_sha256({"x": "1"}) != content_sha256({"x": 1.0})


def test_an_empty_checkpoint_in_a_spec_is_an_error():
    for text in ("resnet20@", "resnet20@ ", "import:pkg.mod:Net@"):
        with pytest.raises(ValueError, match="nothing after '@'"):
            parse_model_spec(text)


def test_path_like_specs_that_do_not_exist_say_file_not_found(tmp_path):
    for text in ("runs/r20-s0/model.pt", str(tmp_path / "absent.pt"), "model.th", "ens.json", "x.onnx"):
        with pytest.raises(FileNotFoundError, match="file not found"):
            parse_model_spec(text)
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_spec("resnet21").load()


def test_range_typo_names_the_syntax(tmp_path):
    from overinterp.models.formats import InputContract

    with pytest.raises(ValueError, match="expected LO:HI"):
        InputContract.from_options({"range": "0-255"})


def test_the_architecture_record_is_declared_and_saved(tmp_path):
    model = create_model("smallcnn", num_classes=3, width=4)
    assert model.architecture == Architecture("smallcnn", 3, {"width": 4})
    assert model.arch == "smallcnn" and model.num_classes == 3
    plain = Classifier(torch.nn.Flatten())
    assert plain.architecture is None and plain.arch is None and plain.num_classes is None
    with pytest.raises(ValueError, match="give arch"):
        save_checkpoint(tmp_path / "p.pt", plain, None)
    path = save_checkpoint(tmp_path / "m.pt", model, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = create_model(None, checkpoint=path)
    assert again.architecture == model.architecture


def test_foreign_files_are_hashed_into_the_results(tmp_path):
    """A third-party state dict and a model file: their sha256 reaches the results rows."""
    from jobkit import write_dataset
    from overinterp.cli import main
    from overinterp.results import read_results

    torch.manual_seed(0)
    net = create_model("smallcnn", num_classes=3, width=4).network
    foreign = tmp_path / "theirs.pth"
    torch.save({"state_dict": net.state_dict()}, foreign)
    sha = hashlib.sha256(foreign.read_bytes()).hexdigest()
    model = create_model("smallcnn", checkpoint=foreign, preprocessing="none", width=4)
    assert (model.source_file, model.source_sha256) == (str(foreign.resolve()), sha)
    data = write_dataset(tmp_path / "d.npz", n=6)
    results = tmp_path / "r.csv"
    argv = ["evaluate", "--model", "smallcnn?width=4", "--checkpoint", str(foreign), "--preprocessing", "none"]
    assert main([*argv, "--dataset", f"{data}:test", "--results", str(results)]) == 0
    rows = read_results(results)
    assert rows and all(f"source sha256 {sha}" in r["notes"] for r in rows)
    fixture = Path(__file__).parent / "fixtures" / "tiny_cnn_255_nhwc_float.tflite"
    pytest.importorskip("ai_edge_litert")
    shutil.copy(fixture, tmp_path / "tiny.tflite")
    m = parse_model_spec(f"{tmp_path / 'tiny.tflite'}?range=0:255").load()
    assert m.source_sha256 == hashlib.sha256(fixture.read_bytes()).hexdigest()


def test_an_ensemble_file_names_no_code(tmp_path, monkeypatch):
    from overinterp.models import load_ensemble

    ckpt = save_checkpoint(tmp_path / "m.pt", small(), None)
    monkeypatch.chdir(tmp_path)
    member = {"checkpoint": str(ckpt), "arch": "import:subprocess:getoutput", "arch_kwargs": {"cmd": "touch x"}}
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"format": "overinterp-ensemble", "format_version": 1, "members": [member]}))
    with pytest.raises(ValueError):
        load_ensemble(path)
    assert not (tmp_path / "x").exists()


def test_a_written_ensemble_file_is_sealed(tmp_path):
    from overinterp.models import load_ensemble, save_ensemble

    a = save_checkpoint(tmp_path / "a.pt", small(0), None)
    b = save_checkpoint(tmp_path / "b.pt", small(1), None)
    path = save_ensemble(tmp_path / "e.json", [a, b])
    assert load_ensemble(path).members[0] is not None
    d = json.loads(path.read_text())
    d["members"] = [d["members"][0], d["members"][0]]  # an edit that swaps a member
    path.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="ensemble file .*e.json is corrupt"):
        load_ensemble(path)
    del d["content_sha256"]  # a hand-written file: read as it is
    path.write_text(json.dumps(d))
    assert len(load_ensemble(path).members) == 2
