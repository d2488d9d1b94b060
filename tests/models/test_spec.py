"""The one model-spec parser: every form, the options, and a job manifest's model dict."""

from __future__ import annotations

import pytest

from jobkit import write_model
from overinterp.models import ModelSpec, load_model_spec, parse_model_spec


def test_forms(tmp_path):
    ckpt = write_model(tmp_path / "a@b.pt")  # '@' in a file name: an existing file is taken whole
    assert parse_model_spec(str(ckpt)) == ModelSpec(None, str(ckpt))
    assert parse_model_spec(f"mine={ckpt}").label == "mine"
    assert parse_model_spec("resnet20@w.th?preprocessing=imagenet") == ModelSpec("resnet20", "w.th", "imagenet")
    assert parse_model_spec("resnet20", checkpoint="w.th", num_classes=10) == ModelSpec("resnet20", "w.th", None, 10)
    spec = parse_model_spec("lab=import:pkg.mod:Net@c.pt?depth=28&baseline=cifar10")
    assert (spec.kind, spec.name, spec.checkpoint, spec.options, spec.baseline, spec.label) == (
        "import",
        "import:pkg.mod:Net",
        "c.pt",
        {"depth": 28},
        "cifar10",
        "lab",
    )
    rb = parse_model_spec("robustbench:Carmon2019Unlabeled?threat_model=Linf")
    assert (
        rb.kind == "robustbench" and rb.options == {"threat_model": "Linf"} and rb.display_name == "Carmon2019Unlabeled"
    )
    (tmp_path / "ens.json").write_text("{}")
    assert parse_model_spec(str(tmp_path / "ens.json")).kind == "ensemble"
    assert parse_model_spec(None, checkpoint=ckpt).kind == "checkpoint"


def test_errors():
    with pytest.raises(ValueError, match="key=value"):
        parse_model_spec("smallcnn?width")
    with pytest.raises(ValueError, match="robustbench"):
        parse_model_spec("robustbench:Foo?colour=1")
    with pytest.raises(ValueError, match="also given"):
        parse_model_spec("resnet20@a.th", checkpoint="b.th")
    with pytest.raises(ValueError, match="also given"):
        parse_model_spec("resnet20?preprocessing=cifar10", preprocessing="imagenet")
    with pytest.raises(ValueError):
        parse_model_spec(None)


@pytest.mark.parametrize("spec", ["smallcnn?width=4&width=8", "smallcnn?preprocessing=cifar10&preprocessing=imagenet"])
def test_option_given_twice_is_refused(spec):
    """An option repeated after ``?`` is an error naming it. Catches a parser that keeps the last
    (or first) value silently: ``net.onnx?range=0:255&range=0:1`` audited the model in the wrong
    range and stopped at the pipeline check, which blamed the range the user had declared."""
    key = spec.split("?")[1].split("=")[0]
    with pytest.raises(ValueError, match=f"gives {key} twice"):
        parse_model_spec(spec)


def test_load_and_manifest_dict(tmp_path):
    ckpt = write_model(tmp_path / "m.pt")
    model = load_model_spec(f"{ckpt}")
    assert model.arch == "smallcnn" and not model.training
    assert load_model_spec("smallcnn?width=4&num_classes=3").network is not None
    plain = parse_model_spec(str(ckpt))
    assert plain.to_dict() == {"name": None, "checkpoint": str(ckpt), "preprocessing": None, "num_classes": None}
    assert ModelSpec.from_dict(plain.to_dict()) == plain
    rich = parse_model_spec("smallcnn?width=4&baseline=0.5")
    assert ModelSpec.from_dict(rich.to_dict()) == rich


def test_one_model_spec_class():
    from overinterp.jobs import ModelSpec as JobsModelSpec

    assert JobsModelSpec is ModelSpec


def test_as_text_is_read_back_as_the_same_spec(tmp_path):
    """``ModelSpec.as_text()`` is what a user would type for the spec (the audit prints it in the
    check-method command it recommends): parsed again, it is the same spec. Wrong implementations
    caught: ``str(spec)`` (drops the options, preprocessing, number of classes, baseline, label and
    pretrained weights), a string option that looks like a number written bare (read back as a
    number), a spec no string can carry returned anyway instead of ``None``."""
    ckpt = write_model(tmp_path / "a@b.pt")
    texts = [
        "resnet20",
        "resnet20@w.th?preprocessing=imagenet&num_classes=10",
        'lab=import:pkg.mod:Net@c.pt?depth=28&baseline=cifar10&tag="7"',
        "robustbench:Carmon2019Unlabeled?threat_model=Linf",
        "resnet20?pretrained=true",
        "smallcnn?baseline=[0.1,0.2,0.3]&width=16",
        str(ckpt),
        f"mine={write_model(tmp_path / 'c.pt')}?preprocessing=cifar10",
    ]
    for text in texts:
        spec = parse_model_spec(text)
        again = spec.as_text()
        assert again is not None and parse_model_spec(again) == spec, (text, again)
    assert parse_model_spec('lab=import:pkg.mod:Net?tag="7"').as_text() != "lab=import:pkg.mod:Net?tag=7"
    assert ModelSpec("resnet20", "w?x=1.th").as_text() is None  # a '?' in the path starts the options
