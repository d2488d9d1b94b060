"""FindSIS, keep masks, sufficiency re-checks and the trace file format."""

from __future__ import annotations

import io
import math
import os

import pytest
import torch

import overinterp
from overinterp import BackselectTrace, backselect, logit, sis_collection
from reference import TinyCNN, reference_backselect, score_removal

H, W = 6, 5


@pytest.fixture(scope="module")
def model():
    return TinyCNN(num_classes=3, height=H, width=W, seed=4, bias=False).double()


@pytest.fixture(scope="module")
def images(model):
    g = torch.Generator().manual_seed(11)
    return torch.rand(4, 3, H, W, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def trace(model, images):
    return backselect(model, images, batch_size=64, progress=False)


def brute_force_sis(trace, i, tau):
    """Walk back from the last-removed feature until p ≥ τ, reading the trace."""
    p = int(trace.num_features[i])
    order = trace.order[i].tolist()
    values = [float(trace.full_logodds[i])] + trace.logodds[i].double().tolist()
    if values[0] < logit(tau):
        return None
    for j in range(p - 1, -1, -1):  # S = order[j:], value = after removing order[:j]
        if values[j] >= logit(tau):
            return order[j:]
    raise AssertionError


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_find_sis_matches_walk_back(trace, tau):
    res = trace.find_sis(tau)
    assert len(res) == len(trace) and not res.verified
    for i in range(len(trace)):
        want = brute_force_sis(trace, i, tau)
        got = res[i]
        assert (got is None and want is None) or got.tolist() == want


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9, 0.99])
def test_every_sis_is_sufficient(model, images, trace, tau):
    res = trace.find_sis(tau, model, images)
    assert res.verified
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i, s in enumerate(res):
        if s is None:
            assert torch.sigmoid(trace.full_logodds[i].double()) < tau + 1e-6
            continue
        kept = set(s.tolist())
        removed = [f for f in range(H * W) if f not in kept]
        lo = score_removal(model, images[i], int(trace.target[i]), base, removed)
        assert lo >= logit(tau)
        assert res.logodds[i] == pytest.approx(lo, abs=1e-9)
        assert res.confidence[i] >= tau


def test_verification_extends_sis_that_falls_short(model, images, trace):
    """Corrupt the stored log-odds so FindSIS picks too small a subset: the re-check
    must catch it, extend the SIS along the trace and count it."""
    tau = 0.7
    honest = trace.find_sis(tau, model, images)
    i = next(k for k, s in enumerate(honest) if s is not None and s.numel() >= 2)
    bad = BackselectTrace.from_dict(trace.to_dict())
    bad.logodds_padded[i, :] = 50.0  # claims everything stays confident
    claimed = bad.find_sis(tau)
    assert claimed[i].numel() == 1
    checked = bad.find_sis(tau, model, images)
    assert checked.extended >= 1
    assert checked[i].tolist() == honest[i].tolist()


def test_keep_mask_counts(trace):
    for frac in (0.0, 0.05, 0.1, 0.5, 1.0):
        m = trace.keep_mask(frac)
        assert m.shape == (len(trace), 1, H, W) and m.dtype == torch.bool
        k = math.ceil(frac * H * W - 1e-9)
        assert (m.sum((1, 2, 3)) == k).all()
        for i in range(len(trace)):
            kept = set(trace.order[i][H * W - k :].tolist())
            assert set(m[i, 0].flatten().nonzero().flatten().tolist()) == kept
    with pytest.raises(ValueError, match="fraction"):
        trace.keep_mask(1.5)


def test_keep_mask_five_percent_of_cifar_size():
    n, p = 2, 1024
    order = torch.stack([torch.randperm(p) for _ in range(n)])
    t = BackselectTrace(
        order_padded=order,
        logodds_padded=torch.zeros(n, p),
        evaluated=torch.ones(n, p, dtype=torch.bool),
        num_features=torch.full((n,), p),
        target=torch.zeros(n, dtype=torch.long),
        full_logodds=torch.zeros(n),
        method={"name": "exact", "params": {}},
        image_shape=(3, 32, 32),
        baseline=torch.zeros(3, 32, 32),
    )
    m = t.keep_mask(0.05)
    assert m.sum((1, 2, 3)).tolist() == [52, 52]
    assert m[0, 0].flatten()[order[0, -52:]].all()


def test_group_keep_mask_covers_whole_groups(model, images):
    groups = overinterp.patch_features(H, W, (2, 3))
    trace = backselect(model, images, features=groups, batch_size=16, progress=False)
    g = int(groups.max()) + 1
    assert trace.P == g
    m = trace.keep_mask(0.34)
    k = math.ceil(0.34 * g - 1e-9)
    for i in range(len(trace)):
        ids = set(trace.order[i][g - k :].tolist())
        expected = torch.isin(groups, torch.tensor(sorted(ids)))
        assert torch.equal(m[i, 0], expected)


def test_save_load_roundtrip(tmp_path, trace):
    trace.labels = torch.tensor([0, 1, 2, 0])
    path = trace.save(tmp_path / "sub" / "trace.pt")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    back = BackselectTrace.load(path)
    for name in (
        "order_padded",
        "logodds_padded",
        "evaluated",
        "num_features",
        "target",
        "full_logodds",
        "baseline",
        "labels",
    ):
        assert (
            torch.equal(
                getattr(back, name),
                getattr(trace, name),
            )
            if name != "logodds_padded"
            else torch.equal(back.logodds_padded.nan_to_num(-9), trace.logodds_padded.nan_to_num(-9))
        )
    assert back.method == trace.method and back.image_shape == trace.image_shape
    assert back.meta["overinterp"] == overinterp.__version__
    assert [None if s is None else s.tolist() for s in back.find_sis(0.5)] == [
        None if s is None else s.tolist() for s in trace.find_sis(0.5)
    ]


def test_load_refuses_bad_files(tmp_path, trace):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a trace at all")
    with pytest.raises(ValueError, match="cannot read trace"):
        BackselectTrace.load(junk)
    with pytest.raises(FileNotFoundError):
        BackselectTrace.load(tmp_path / "missing.pt")
    d = trace.to_dict()
    d["version"] = overinterp.TRACE_VERSION + 1
    torch.save(d, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version"):
        BackselectTrace.load(tmp_path / "future.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an overinterp"):
        BackselectTrace.load(tmp_path / "other.pt")


def test_atomic_save_leaves_old_file_on_interrupt(tmp_path, trace, monkeypatch):
    """A crash *in the middle of writing* (half the bytes written, then an interrupt) leaves the
    previous trace intact and loadable, and no partial or temporary file behind.

    Wrong implementations caught: the atomic save replaced by a plain ``torch.save(obj, path)``
    or by writing into ``path`` opened in place (the old file is then truncated to half a
    new one), and a temporary file left behind after the crash."""
    path = trace.save(tmp_path / "t.pt")
    before = path.read_bytes()
    real_save = torch.save

    def crash_mid_write(obj, f, *a, **k):
        buf = io.BytesIO()
        real_save(obj, buf)
        half = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(half)
        else:
            f.write(half)
            f.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_mid_write)
    other = BackselectTrace.from_dict({**trace.to_dict(), "meta": {"run": 2}})
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.pt"]
    assert torch.equal(BackselectTrace.load(path).order_padded, trace.order_padded)


def test_sis_collection_disjoint_sufficient_and_matches_reference(model, images):
    tau = 0.7
    coll = sis_collection(model, images, tau, batch_size=50, progress=False)
    assert len(coll) == len(images)
    target = model(images).argmax(1)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i, sets in enumerate(coll):
        seen: set[int] = set()
        for s in sets:
            ids = set(s.tolist())
            assert not (ids & seen)
            seen |= ids
            removed = [f for f in range(H * W) if f not in ids]
            assert score_removal(model, images[i], int(target[i]), base, removed) >= logit(tau)
        # reference: iterate the plain backselect with found SIS masked for good
        masked: list[int] = []
        ref_sets = []
        while True:
            if score_removal(model, images[i], int(target[i]), base, masked) < logit(tau):
                break
            x = images[i].clone()
            for f in masked:
                x[:, f // W, f % W] = 0.0
            order, scores = reference_backselect(model, x, int(target[i]), base)
            order_av = [f for f in order if f not in masked]
            # prefix values over the available features only
            vals, cur = [], list(masked)
            for f in order_av:
                cur.append(f)
                vals.append(score_removal(model, images[i], int(target[i]), base, cur))
            full = score_removal(model, images[i], int(target[i]), base, masked)
            values = [full] + vals
            j = max(k for k in range(len(order_av)) if values[k] >= logit(tau))
            ref_sets.append(order_av[j:])
            masked += order_av[j:]
            if len(masked) == H * W:
                break
        assert [s.tolist() for s in sets] == ref_sets


def test_threshold_validation(trace):
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            trace.find_sis(bad)
    with pytest.raises(TypeError):
        trace.find_sis("high")


def test_select_takes_every_per_image_entry_alike(model, images):
    """``trace.select(rows)`` equals the trace of those images computed alone, the screening
    diagnostic's per-image lists included. Wrong implementations caught: ``meta`` copied whole
    (image 2's screening counts reported for image 0), ``screen_rank`` or per-image feature maps
    left unselected, rows taken in sorted rather than the given order."""
    from overinterp import Fast

    method = Fast(step_fraction=0.2, screened=0.5, exact=0.1, width=3)
    whole = backselect(model, images, method=method, batch_size=64, progress=False)
    part = whole.select([2, 0])
    for j, i in enumerate((2, 0)):
        alone = backselect(model, images[i : i + 1], method=method, batch_size=64, progress=False)
        assert torch.equal(part.order[j], alone.order[0])
        assert torch.equal(part.screen_rank[j], alone.screen_rank[0])
        for k, v in alone.meta["screening"].items():
            assert part.meta["screening"][k][j] == v[0]
    assert len(part) == 2 and part.meta["screening"]["steps"] == [
        whole.meta["screening"]["steps"][2],
        whole.meta["screening"]["steps"][0],
    ]
