"""Pretrained weights by name: a local copy, the torch hub cache, or a download — sha256 checked, no network here.

Wrong implementations these tests catch: a resolver that goes to the network although a local
copy exists (the patched download raises); one that accepts any file of the right name (a
one-byte change is refused, and a bad download leaves nothing in the cache); ``pretrained=True``
that silently ignores a contradicting preprocessing or a checkpoint; a spec form that passes
``pretrained`` on to the architecture builder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from overinterp.cli import main
from overinterp.errors import IntegrityError
from overinterp.models import create_model, parse_model_spec
from overinterp.models.pretrained import PRETRAINED, PRETRAINED_DIR_ENV, pretrained_file

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "models" / "resnet20-cifar10.th"
RELEASE = PRETRAINED["resnet20"]


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache: every download attempt fails loudly."""
    calls = []

    def refuse(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(PRETRAINED_DIR_ENV, raising=False)
    return calls


def test_release_record():
    assert RELEASE.url.endswith("/pretrained_models/resnet20-12fca82f.th")
    assert RELEASE.sha256.startswith("12fca82f") and len(RELEASE.sha256) == 64
    assert RELEASE.file_name == "resnet20-12fca82f.th"


def test_offline_without_a_copy_names_the_url_and_places(offline, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{RELEASE.url}.*{PRETRAINED_DIR_ENV}"):
        pretrained_file("resnet20")
    assert offline == [RELEASE.url]
    assert not (tmp_path / "hub" / "checkpoints" / RELEASE.file_name).exists()
    with pytest.raises(FileNotFoundError, match="no local copy"):
        pretrained_file("resnet20", download=False)
    with pytest.raises(ValueError, match="no pretrained weights are known for 'smallcnn'"):
        pretrained_file("smallcnn")


def test_a_wrong_file_is_refused_wherever_it_is(offline, tmp_path, monkeypatch):
    fake = tmp_path / "local" / "resnet20-cifar10.th"
    fake.parent.mkdir()
    fake.write_bytes(b"not the release")
    monkeypatch.setenv(PRETRAINED_DIR_ENV, str(fake.parent))
    with pytest.raises(IntegrityError, match="not the resnet20 release"):
        pretrained_file("resnet20")
    with pytest.raises(IntegrityError):
        pretrained_file("resnet20", path=fake)
    with pytest.raises(FileNotFoundError, match="file not found"):
        pretrained_file("resnet20", path=tmp_path / "absent.th")
    assert offline == []  # a local copy, even a bad one, never sends us to the network


def test_a_download_with_another_hash_leaves_nothing(monkeypatch, tmp_path):
    def wrong(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"tampered")  # a downloader that does not check (the hub's does)

    monkeypatch.setattr(torch.hub, "download_url_to_file", wrong)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(PRETRAINED_DIR_ENV, raising=False)
    with pytest.raises(IntegrityError):
        pretrained_file("resnet20")
    assert not (tmp_path / "hub" / "checkpoints" / RELEASE.file_name).exists()


def test_spec_forms_and_refusals():
    spec = parse_model_spec("resnet20?pretrained=true")
    assert spec.pretrained and spec.options == {} and spec.to_dict()["pretrained"] is True
    assert parse_model_spec("resnet20", pretrained=True) == spec
    assert "pretrained" not in parse_model_spec("resnet20").to_dict()  # old manifests unchanged
    assert not parse_model_spec("resnet20?pretrained=false").pretrained
    for bad, match in (
        ("smallcnn?pretrained=1", "no pretrained weights are known"),
        ("resnet20@w.th?pretrained=1", "no checkpoint"),
        ("resnet20?pretrained=maybe", "true or false"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_model_spec(bad)


needs_shared = pytest.mark.skipif(not SHARED.is_file(), reason=f"needs the shared weights {SHARED} (absent here)")


@needs_shared
def test_the_local_copy_loads_with_its_preprocessing(offline, tmp_path, monkeypatch):
    monkeypatch.setenv(PRETRAINED_DIR_ENV, str(SHARED.parent))
    assert pretrained_file("resnet20") == SHARED
    model = create_model("resnet20", pretrained=True)
    assert model.preprocessing_config()["mean"] == pytest.approx([0.485, 0.456, 0.406])
    same = create_model("resnet20", checkpoint=SHARED, preprocessing="imagenet")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), same(x))
    assert torch.equal(parse_model_spec("resnet20?pretrained=true").load()(x), model(x))
    with pytest.raises(ValueError, match="trained with the 'imagenet' preprocessing"):
        create_model("resnet20", pretrained=True, preprocessing="cifar10")
    with pytest.raises(ValueError, match="not both"):
        create_model("resnet20", pretrained=True, checkpoint=SHARED)
    assert offline == []


@needs_shared
def test_a_download_lands_in_the_hub_cache_and_is_reused(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        shutil.copy(SHARED, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(PRETRAINED_DIR_ENV, raising=False)
    cached = pretrained_file("resnet20")
    assert cached == tmp_path / "hub" / "checkpoints" / RELEASE.file_name and calls == [RELEASE.url]
    assert pretrained_file("resnet20") == cached and len(calls) == 1  # the cache, not the network
    data = tmp_path / "d.npz"
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        data,
        test_images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        test_labels=np.arange(4, dtype=np.uint8),
    )
    capsys.readouterr()
    assert main(["evaluate", "--model", "resnet20", "--pretrained", "--dataset", f"{data}:test"]) == 0
    assert len(calls) == 1
