"""create_model, save_checkpoint and load_checkpoint_file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from overinterp.models import create_model, list_models, load_checkpoint_file, save_checkpoint
from overinterp.models.classifier import PREPROCESSING_PRESETS, Classifier, Normalize

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PRETRAINED = DATA / "models" / "resnet20-cifar10.th"
PRETRAINED_SHA256 = "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"
LOSSLESS = DATA / "cifar10-lossless.npz"


def all_eval(model: torch.nn.Module) -> bool:
    return all(not m.training for m in model.modules())


def randomised_resnet(name: str = "resnet20", seed: int = 0, **kwargs) -> Classifier:
    """A model whose BatchNorm statistics are not the defaults, so that loading them matters."""
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model


def write_third_party(path: Path, model: Classifier, prefix: str = "module.", wrap: bool = True) -> Path:
    sd = {prefix + k: v for k, v in model.network.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "best_prec1": 90.0} if wrap else sd, path)
    return path


# --------------------------------------------------------------------------- without checkpoints


def test_create_model_defaults_and_eval_mode():
    model = create_model("smallcnn")
    assert isinstance(model, Classifier)
    assert all_eval(model)
    assert model.preprocessing is None  # identity unless given
    assert model.preprocessing_config() == {"type": "identity"}
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    m2 = create_model("resnet20", num_classes=5, preprocessing="cifar10")
    assert isinstance(m2.preprocessing, Normalize)
    assert m2.network.linear.out_features == 5 and all_eval(m2)
    assert torch.allclose(m2.baseline, torch.tensor(PREPROCESSING_PRESETS["cifar10"][0]))


def test_arch_kwargs_are_passed_to_the_builder():
    model = create_model("smallcnn", width=8, in_channels=1)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet21'") as info:
        create_model("resnet21")
    for name in ("resnet20", "resnet56", "smallcnn"):
        assert name in str(info.value)
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "smallcnn"} <= set(list_models())


def test_name_required_without_checkpoint():
    with pytest.raises(ValueError, match="name"):
        create_model(None)


# --------------------------------------------------------------------------- own format


def test_roundtrip_gives_identical_logits_and_recorded_preprocessing(tmp_path):
    model = randomised_resnet(preprocessing="imagenet")
    model.class_names = [f"c{i}" for i in range(10)]
    path = save_checkpoint(tmp_path / "r20.pt", model, "resnet20", extra={"epochs": 3, "acc": 0.5})
    assert path == tmp_path / "r20.pt"

    raw = load_checkpoint_file(path)
    assert raw["format"] == "overinterp-checkpoint" and raw["format_version"] == 2
    assert raw["arch"] == "resnet20" and raw["num_classes"] == 10 and raw["arch_kwargs"] == {}
    assert raw["preprocessing"]["type"] == "normalize"
    assert raw["extra"] == {"epochs": 3, "acc": 0.5}
    assert not any(k.startswith("module.") for k in raw["state_dict"])

    loaded = create_model(None, checkpoint=path)
    assert all_eval(loaded)
    assert loaded.name == "resnet20" and loaded.class_names == model.class_names
    assert loaded.preprocessing_config() == model.preprocessing_config()
    assert torch.equal(loaded.baseline, model.baseline)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the same name, the same preprocessing given explicitly: accepted
    again = create_model("resnet20", checkpoint=str(path), preprocessing="imagenet")
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_roundtrip_identity_preprocessing_and_arch_kwargs(tmp_path):
    model = create_model("smallcnn", num_classes=4, width=8)
    path = save_checkpoint(tmp_path / "s.pt", model, "smallcnn")
    loaded = create_model(None, checkpoint=path)
    assert loaded.preprocessing is None
    assert loaded.network.linear.out_features == 4
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_recorded_preprocessing_cannot_be_overridden(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", create_model("smallcnn", preprocessing="cifar10"), "smallcnn")
    with pytest.raises(ValueError, match="records the preprocessing"):
        create_model(None, checkpoint=path, preprocessing="imagenet")
    with pytest.raises(ValueError, match="records the preprocessing"):
        create_model(None, checkpoint=path, preprocessing="none")


def test_own_checkpoint_arch_and_class_conflicts(tmp_path):
    path = save_checkpoint(tmp_path / "r32.pt", create_model("resnet32"), "resnet32")
    with pytest.raises(ValueError, match=r"holds a 'resnet32' network, not 'resnet20'"):
        create_model("resnet20", checkpoint=path)
    with pytest.raises(ValueError, match="has 10 classes, but num_classes=100"):
        create_model(None, checkpoint=path, num_classes=100)


def test_save_refuses_a_network_that_is_not_the_arch(tmp_path):
    with pytest.raises(ValueError, match="is not 'resnet20'"):
        save_checkpoint(tmp_path / "x.pt", create_model("resnet32"), "resnet20")
    with pytest.raises(ValueError, match="unknown model"):
        save_checkpoint(tmp_path / "x.pt", create_model("resnet20"), "resnet99")
    with pytest.raises(TypeError, match="Classifier"):
        save_checkpoint(tmp_path / "x.pt", create_model("resnet20").network, "resnet20")
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", create_model("smallcnn"), "smallcnn", extra={"a": object()})
    assert not list(tmp_path.iterdir())


def test_save_is_atomic_under_keyboard_interrupt(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, create_model("smallcnn"), "smallcnn", extra={"version": "old"})
    before = path.read_bytes()

    def interrupted_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, create_model("smallcnn"), "smallcnn", extra={"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left
    assert load_checkpoint_file(path)["extra"] == {"version": "old"}
    # and a fresh target that was interrupted does not exist at all
    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "new.pt", create_model("smallcnn"), "smallcnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "m.pt", create_model("smallcnn"), "smallcnn")


# --------------------------------------------------------------------------- third-party


def test_third_party_checkpoint_without_preprocessing_is_refused(tmp_path):
    path = write_third_party(tmp_path / "tp.th", randomised_resnet())
    with pytest.raises(ValueError) as info:
        create_model("resnet20", checkpoint=path)
    msg = str(info.value)
    assert "records no input normalisation" in msg
    assert "preprocessing='imagenet'" in msg
    assert str(path) in msg
    with pytest.raises(ValueError, match="records no architecture"):
        create_model(None, checkpoint=path, preprocessing="imagenet")


@pytest.mark.parametrize("wrap", [True, False], ids=["state_dict", "bare"])
def test_module_prefixed_third_party_loads_with_imagenet(tmp_path, wrap):
    model = randomised_resnet(seed=1)
    path = write_third_party(tmp_path / "tp.th", model, wrap=wrap)
    loaded = create_model("resnet20", checkpoint=path, preprocessing="imagenet")
    assert all_eval(loaded) and loaded.class_names is None
    assert loaded.preprocessing_config()["mean"] == pytest.approx(PREPROCESSING_PRESETS["imagenet"][0])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.network(Normalize(*PREPROCESSING_PRESETS["imagenet"])(x))
        assert torch.allclose(loaded(x), expected, atol=1e-6)
    # the loaded model can be re-saved in the own format, which then records the normalisation
    own = save_checkpoint(tmp_path / "own.pt", loaded, "resnet20")
    assert create_model(None, checkpoint=own).preprocessing_config() == loaded.preprocessing_config()


def test_third_party_num_classes_inferred_from_head(tmp_path):
    path = write_third_party(tmp_path / "c100.th", create_model("resnet20", num_classes=100))
    loaded = create_model("resnet20", checkpoint=path, preprocessing="cifar10")
    assert loaded.network.linear.out_features == 100
    with pytest.raises(ValueError, match="100-class head"):
        create_model("resnet20", num_classes=10, checkpoint=path, preprocessing="cifar10")


def test_loaded_dict_is_accepted():
    sd = create_model("smallcnn").network.state_dict()
    model = create_model("smallcnn", checkpoint={"state_dict": sd}, preprocessing="none")
    assert all_eval(model)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "absent.th"
    with pytest.raises(FileNotFoundError, match="absent.th"):
        load_checkpoint_file(path)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        create_model("resnet20", checkpoint=path, preprocessing="imagenet")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.th"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*corrupt\.th") as info:
        load_checkpoint_file(path)
    assert "weights_only" in str(info.value)
    empty = tmp_path / "empty.th"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.th"):
        create_model("resnet20", checkpoint=empty, preprocessing="imagenet")
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint_file(tmp_path)


def test_file_without_state_dict(tmp_path):
    listed = tmp_path / "list.th"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(ValueError, match=r"list\.th holds a list, not a dict"):
        load_checkpoint_file(listed)
    nosd = tmp_path / "nosd.th"
    torch.save({"epoch": 3, "acc": 0.9}, nosd)
    with pytest.raises(ValueError, match=r"nosd\.th has no state_dict.*'epoch'"):
        load_checkpoint_file(nosd)
    bad = tmp_path / "bad.th"
    torch.save({"state_dict": {"w": 3}}, bad)
    with pytest.raises(ValueError, match=r"bad\.th.*not a state dict"):
        load_checkpoint_file(bad)


def test_newer_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("smallcnn"), "smallcnn")
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 3
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="format_version 3, newer"):
        load_checkpoint_file(path)


def test_wrong_architecture_weights(tmp_path):
    path = write_third_party(tmp_path / "r32.th", create_model("resnet32"))
    with pytest.raises(ValueError) as info:
        create_model("resnet20", checkpoint=path, preprocessing="imagenet")
    msg = str(info.value)
    assert "does not fit architecture 'resnet20'" in msg and str(path) in msg
    assert "unexpected keys" in msg and "layer1.3.conv1.weight" in msg
    # the other way round: keys missing
    path20 = write_third_party(tmp_path / "r20.th", create_model("resnet20"))
    with pytest.raises(ValueError, match=r"'resnet32'.*missing keys \(layer1\.3\."):
        create_model("resnet32", checkpoint=path20, preprocessing="imagenet")


def test_shape_mismatch_is_named(tmp_path):
    path = write_third_party(tmp_path / "w16.th", create_model("smallcnn", width=16), prefix="")
    with pytest.raises(ValueError) as info:
        create_model("smallcnn", checkpoint=path, preprocessing="none", width=8)
    msg = str(info.value)
    assert "'smallcnn' with {'width': 8}" in msg
    assert "shape mismatches" in msg and "features.0.weight: checkpoint (16, 3, 3, 3) vs model (8, 3, 3, 3)" in msg


# --------------------------------------------------------------------------- real pretrained weights


@pytest.mark.data
def test_public_pretrained_resnet20_accuracy():
    if not PRETRAINED.is_file() or not LOSSLESS.is_file():
        pytest.skip(f"needs {PRETRAINED} and {LOSSLESS} (shared data not present)")
    assert hashlib.sha256(PRETRAINED.read_bytes()).hexdigest() == PRETRAINED_SHA256
    with pytest.raises(ValueError, match="records no input normalisation"):
        create_model("resnet20", checkpoint=PRETRAINED)
    model = create_model("resnet20", checkpoint=PRETRAINED, preprocessing="imagenet")
    assert all_eval(model) and model.network.linear.out_features == 10
    with np.load(LOSSLESS) as data:
        images, labels = data["test_images"], data["test_labels"]
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(250)])
    accuracy = (pred == y).float().mean().item()
    print(f"pretrained ResNet20 accuracy on the 1000 lossless CIFAR-10 test images: {accuracy:.3f}")
    assert 0.905 <= accuracy <= 0.925, accuracy
