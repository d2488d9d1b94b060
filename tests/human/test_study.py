"""The study builder: sampling rules, nested subsets, opaque files, seeding, inputs (a) and (b)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from humankit import CLASSES, FRACTIONS, HW, build_tiny_study, make_images, make_sources
from PIL import Image

import overinterp
from overinterp.human import db as dbm
from overinterp.human.study import build_study, eligible_mask, load_manifest, source_from_files, source_from_job

P = HW * HW


def _pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (HW, HW)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def test_sampling_rules(study):
    out, m = study
    sources = {s.name: s for s in make_sources()}
    items = m["items"]
    assert len(items) == 2 * len(CLASSES)
    assert Counter(it["label"] for it in items) == {k: 2 for k in range(len(CLASSES))}
    assert Counter(it["model"] for it in items) == {"resnet20": 3, "resnet18": 3, "vgg16_bn": 2}  # 35/35/30 of 8
    assert len({(it["dataset"], it["position"]) for it in items}) == len(items)  # no image twice
    for it in items:  # the assigned model classifies it correctly with p ≥ 0.99
        s = sources[it["model"]]
        r = it["position"]
        assert int(s.labels[r]) == it["label"] and bool(eligible_mask(s, 0.99)[r])
        assert it["confidence"] >= 0.99
    assert {round(x["proportion"], 6) for x in m["models"]} == {0.35, 0.3}


def test_nested_subsets_match_the_trace(study):
    out, m = study
    sources = {s.name: s for s in make_sources()}
    files = {st["id"]: out / st["file"] for st in m["stimuli"]}
    assert len(m["stimuli"]) == 3 * len(m["items"])
    for it in m["items"]:
        s, r = sources[it["model"]], it["position"]
        shown = []
        for f in FRACTIONS:
            px = _pixels(files[it["stimuli"][repr(f)]])
            keep = ~(px == 128).all(0)  # grey = hidden
            assert int(keep.sum()) == math.ceil(f * P)
            assert torch.equal(keep, s.trace.keep_mask(f)[r, 0])  # the model's own last-removed pixels
            assert torch.equal(px[:, keep], s.images[r][:, keep])  # true pixel values where shown
            shown.append(keep)
        assert bool((shown[0] <= shown[1]).all() and (shown[1] <= shown[2]).all())  # nested


def test_file_names_reveal_nothing(study):
    out, m = study
    names = sorted(p.name for p in (out / "images").iterdir())
    assert len(names) == len(m["stimuli"]) == len(set(names))
    for n in names:
        assert re.fullmatch(r"[0-9a-f]{32}\.png", n)
    for st in m["stimuli"]:
        assert st["file"] == f"images/{st['id']}.png"
    for it in m["items"]:
        assert it["item"] not in it["stimuli"].values()
    # PNGs carry no text chunks (no label or source in metadata)
    with Image.open(out / "images" / names[0]) as im:
        assert not getattr(im, "text", {})


def test_seeded_selection_and_fresh_tokens(tmp_path):
    a = build_tiny_study(tmp_path / "a", seed=3)
    b = build_tiny_study(tmp_path / "b", seed=3)
    c = build_tiny_study(tmp_path / "c", seed=4)
    key = lambda m: sorted((it["model"], it["position"], it["label"]) for it in m["items"])  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)
    assert {st["id"] for st in a["stimuli"]}.isdisjoint(st["id"] for st in b["stimuli"])


def test_database_record_and_refusals(study, tmp_path):
    out, m = study
    engine = dbm.make_engine(dbm.default_database_url(out))
    try:
        assert dbm.register_study(engine, m) is False  # already recorded by build
        rows = dbm.export_rows(engine, m["study_id"])
        assert rows == []
        from sqlalchemy import func, select
        from sqlalchemy.orm import Session

        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(dbm.Stimulus)) == len(m["stimuli"])
            assert s.scalar(select(dbm.Study.num_items)) == len(m["items"])
    finally:
        engine.dispose()
    with pytest.raises(ValueError, match="already holds a study"):
        build_tiny_study(out)
    with pytest.raises(ValueError, match="too few correctly classified"):
        build_tiny_study(tmp_path / "big", per_class=6)
    with pytest.raises(ValueError, match="proportions"):
        build_tiny_study(tmp_path / "p", proportions=(1, 1))
    assert load_manifest(out)["study_id"] == m["study_id"]


def _centre_logits(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Shift the last linear layer's bias so the random model predicts every class; return predictions."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias -= model(pixels).mean(0)
        return model(pixels).argmax(1)


def test_from_trace_file_and_npz(tmp_path):
    """Input (a): a real backselect trace file + the npz it was made from."""
    from reference import TinyCNN

    model = TinyCNN(num_classes=len(CLASSES), height=HW, width=HW, seed=2)
    images, _ = make_images(1)
    pixels = images.float() / 255
    labels = _centre_logits(model, pixels)  # label := prediction: every image correctly classified
    assert set(labels.tolist()) == set(range(len(CLASSES)))
    np.savez(tmp_path / "imgs.npz", images=images.numpy(), labels=labels.numpy())
    trace = overinterp.backselect(model, pixels, method=overinterp.KStep(8), progress=False)
    trace.save(tmp_path / "t.pt")
    src = source_from_files("tiny", tmp_path / "t.pt", tmp_path / "imgs.npz", classes=CLASSES)
    assert torch.equal(src.images, images) and torch.equal(src.labels, labels)
    m = build_study([src], tmp_path / "s", per_class=1, min_confidence=0.0)
    assert m["models"][0]["quota"] == len(CLASSES) and m["dataset"].endswith("imgs.npz")
    for it in m["items"]:
        px = _pixels(tmp_path / "s" / "images" / f"{it['stimuli'][repr(0.5)]}.png")
        assert torch.equal(~(px == 128).all(0), trace.keep_mask(0.5)[it["position"], 0])
        assert int(labels[it["position"]]) == it["label"]
    with pytest.raises(ValueError, match="too few"):  # nothing reaches p ≥ 0.99 with near-tied logits
        build_study([src], tmp_path / "s2", per_class=1)


def test_from_job_folder(tmp_path):
    """Input (b): an `overinterp backselect-dataset` job folder via overinterp.jobs.load_job."""
    import jobkit
    from overinterp.jobs import run_job

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(18, HW, HW, 3), dtype=np.uint8)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    model = overinterp.load_model("smallcnn", checkpoint=jobkit.write_model(tmp_path / "m0.pt"))
    pred = _centre_logits(model, pixels)
    assert set(pred.tolist()) == set(range(len(jobkit.CLASSES)))
    overinterp.save_checkpoint(tmp_path / "m.pt", model, "smallcnn", arch_kwargs={"width": 4}, num_classes=3)
    np.savez(
        tmp_path / "d.npz",
        test_images=images,
        test_labels=pred.numpy().astype(np.uint8),
        classes=np.array(jobkit.CLASSES),
    )
    spec = jobkit.make_spec(tmp_path / "m.pt", tmp_path / "d.npz", n=18, method=overinterp.KStep(8), shard_size=6)
    run_job(spec, tmp_path / "job", progress=False)
    src = source_from_job("smallcnn", tmp_path / "job")
    assert src.classes == jobkit.CLASSES and torch.equal(src.positions, torch.arange(18))
    assert torch.equal(src.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert torch.equal(src.trace.target, pred)
    m = build_study([src], tmp_path / "s", per_class=2, min_confidence=0.0)
    assert Counter(it["label"] for it in m["items"]) == {0: 2, 1: 2, 2: 2}
    assert all(it["label"] == int(pred[it["position"]]) for it in m["items"])
