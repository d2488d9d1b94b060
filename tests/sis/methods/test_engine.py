"""The streaming engine's host/device contract: no host read per batch, pinned uploads,
the optional CUDA-graph forward (CUDA tests skip without a device)."""

import pytest
import torch

from overinterp.sis.features import patch_features, resolve_features
from overinterp.sis.methods import _engine
from overinterp.sis.methods._engine import Schedule, _Uploader, _use_cuda_graph, select
from overinterp.sis.methods.base import Problem
from reference import TinyCNN

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
#: Python-level ways to read a tensor's value on the host (each a device sync on CUDA)
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
SCHEDULES = {
    "exact": Schedule(),
    "blocks": Schedule(step=lambda rem, tot: max(1, rem // 3)),  # state candidates every step
    "screening": Schedule(screen="reduced", width=2, autocast=torch.bfloat16),
    "probability": Schedule(rank_by="probability"),
    "gradient": Schedule(screen="gradient", step=lambda rem, tot: 2),
    "gradient-screened": Schedule(
        screen="gradient", step=lambda rem, tot: max(1, rem // 4), width=lambda rem, tot, r: 2 * r, stop_at=lambda t: 2
    ),
}


def run_schedule(p: Problem, *, batch_size: int, progress: bool, schedule: Schedule = SCHEDULES["exact"], **kw):
    return select(p, schedule, batch_size=batch_size, progress=progress, **kw)


def problem(device: str = "cpu", dtype: torch.dtype = torch.float64) -> Problem:
    model = TinyCNN(num_classes=3, height=6, width=5, seed=1).to(device, dtype)
    images = torch.rand(4, 3, 6, 5, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    target = torch.tensor([0, 1, 2, 1], device=device)
    # two images of 2×2 patches (P = 9), two of single pixels (P = 30): ragged queues
    per = torch.stack([patch_features(6, 5, 2)] * 2 + [torch.arange(30).view(6, 5)] * 2)
    fmap = resolve_features(per, 4, 6, 5, torch.device(device))
    return Problem(model.eval(), images, torch.zeros(3, 6, 5, dtype=dtype, device=device), target, fmap)


def count_reads(monkeypatch, fn) -> tuple[object, int]:
    calls = [0]
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            calls[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    try:
        out = fn()
    finally:
        monkeypatch.undo()
    return out, calls[0]


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_host_reads_do_not_grow_with_batches(monkeypatch, schedule):
    """The loop reads no tensor back: reads are the same for 1 batch per step as for ~100 in all
    (only the setup's feature counts and the final NaN check remain)."""
    kw = {"schedule": SCHEDULES[schedule]}
    p = problem()
    many, n_many = count_reads(monkeypatch, lambda: run_schedule(p, batch_size=2, progress=False, **kw))
    few, n_few = count_reads(monkeypatch, lambda: run_schedule(p, batch_size=512, progress=False, **kw))
    work = many.stats.get("evaluations", 0) + many.stats.get("forward_backward_passes", 0)
    assert work >= 40  # ≥ 20 batches of 2
    assert n_many == n_few <= 6  # setup counts, the final NaN check, summaries
    assert torch.equal(many.order, few.order)


def test_cuda_graph_flag_is_ignored_on_cpu(monkeypatch):
    p = problem()
    plain = run_schedule(p, batch_size=7, progress=False)
    monkeypatch.setenv("OVERINTERP_CUDA_GRAPH", "1")
    graphed = run_schedule(p, batch_size=7, progress=False, cuda_graph=True)
    assert "cuda_graph" not in graphed.stats
    assert torch.equal(plain.order, graphed.order) and torch.equal(
        plain.logodds.nan_to_num(), graphed.logodds.nan_to_num()
    )


def test_cuda_graph_option_reads_the_environment(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.delenv("OVERINTERP_CUDA_GRAPH", raising=False)
    assert not _use_cuda_graph(None, cuda) and _use_cuda_graph(True, cuda)
    monkeypatch.setenv("OVERINTERP_CUDA_GRAPH", "yes")
    assert _use_cuda_graph(None, cuda) and not _use_cuda_graph(False, cuda)
    assert not _use_cuda_graph(None, torch.device("cpu"))


def test_uploader_keeps_values_and_shapes_on_cpu():
    a, b, c = _Uploader(torch.device("cpu"))([3, 1], torch.arange(6).view(2, 3), [])
    assert a.tolist() == [3, 1] and torch.equal(b, torch.arange(6).view(2, 3)) and c.numel() == 0


@CUDA
def test_cuda_uploader_is_one_pinned_copy():
    a, b = _Uploader(torch.device("cuda"))([5, 2, 7], torch.arange(4).view(2, 2))
    assert a.device.type == "cuda" and a.cpu().tolist() == [5, 2, 7]
    assert torch.equal(b.cpu(), torch.arange(4).view(2, 2))
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # one buffer, one copy


@CUDA
@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if not s.startswith("gradient")])
def test_cuda_loop_never_synchronises(monkeypatch, schedule):
    """``torch.cuda.set_sync_debug_mode("error")`` inside the loop: any sync raises."""
    monkeypatch.setattr(_engine, "_SYNC_DEBUG", "error")
    kw = {"schedule": SCHEDULES[schedule]}
    gpu = run_schedule(problem("cuda"), batch_size=3, progress=False, **kw)
    cpu = run_schedule(problem("cpu"), batch_size=3, progress=False, **kw)
    if schedule != "screening":  # bf16 screens may break near-ties differently on the two devices
        assert torch.equal(gpu.order.cpu(), cpu.order)


@CUDA
@pytest.mark.parametrize("schedule", ["exact", "blocks", "screening"])
def test_cuda_graph_forward_matches_eager(schedule):
    kw = {"schedule": SCHEDULES[schedule]}
    p = problem("cuda", torch.float32)
    eager = run_schedule(p, batch_size=8, progress=False, cuda_graph=False, **kw)
    graphed = run_schedule(p, batch_size=8, progress=False, cuda_graph=True, **kw)
    assert graphed.stats["cuda_graph"] is True
    assert torch.equal(eager.order, graphed.order)
    torch.testing.assert_close(eager.logodds, graphed.logodds, equal_nan=True, rtol=1e-5, atol=1e-5)


@CUDA
def test_cuda_graph_capture_failure_falls_back_to_eager():
    p = problem("cuda", torch.float32)
    model = p.forward

    def syncing_forward(x):  # .item() cannot be captured
        out = model(x)
        return out + 0 * float(out.sum().item())

    p.forward = syncing_forward
    with pytest.warns(RuntimeWarning, match="CUDA graph capture"):
        out = run_schedule(p, batch_size=8, progress=False, cuda_graph=True)
    assert out.stats["cuda_graph"] is False
    p.forward = model
    assert torch.equal(out.order, run_schedule(p, batch_size=8, progress=False).order)


class PerImageWidth(Schedule):
    """Single gradient-screened steps whose width differs per image, recording what the engine observed."""

    def __init__(self, widths: dict[int, int]):
        super().__init__(screen="gradient", width=1)
        self.widths = widths
        self.seen: list[tuple[list[int], list[int], list[int]]] = []

    def exact_count(self, image, remaining, total, r):
        return min(remaining, self.widths[image] if image is not None else max(self.widths.values()))

    def observe(self, images, rank, width):
        self.seen.append((images.tolist(), rank.tolist(), width.tolist()))


def test_a_schedule_adapts_per_image_and_sees_the_screening_diagnostic():
    """Image 1 scores every candidate exactly (width ≥ P): its order is exact's; image 0 takes the
    gradient's first choice. The engine reports, per step, the rank of the exact best in the gradient
    screen (recorded in the trace's diagnostic), and ``observe`` sees the same values.

    Wrong implementations caught: a width shared by all images (image 1 would not be exact, or
    image 0 would be), a diagnostic recorded at the wrong step/image, an ``observe`` hook never called."""
    p = problem()
    p.features = resolve_features(torch.arange(30).view(6, 5), 4, 6, 5, torch.device("cpu"))
    sched = PerImageWidth({0: 1, 1: 30, 2: 3, 3: 3})
    out = select(p, sched, batch_size=7, progress=False)
    exact = select(p, Schedule(), batch_size=7, progress=False)
    assert torch.equal(out.order[1], exact.order[1])
    torch.testing.assert_close(out.logodds[1], exact.logodds[1], rtol=0, atol=1e-12)
    assert (out.screen_rank[0] == 0).all()  # width 1: the exact best is the screen's first
    assert (out.screen_width[1] == torch.arange(30, 0, -1)).all()
    assert ((out.screen_rank[1] >= 0) & (out.screen_rank[1] < out.screen_width[1])).all()
    seen = {}
    for imgs, ranks, widths in sched.seen:
        for i, r, w in zip(imgs, ranks, widths):
            seen.setdefault(i, []).append((r, w))
    for i in range(4):
        assert seen[i] == list(zip(out.screen_rank[i].tolist(), out.screen_width[i].tolist()))
    # a gradient-screened method's trace keeps the diagnostic and summarises it per image
    from overinterp import Fast, backselect

    t = backselect(p.forward, p.images, method=Fast(width=2, recall=1), features=p.features.groups, progress=False)
    assert t.screen_rank is not None and t.screen_width.shape == t.order_padded.shape
    scr = t.meta["screening"]  # per image: screened steps, those whose best came from the bottom quarter
    assert scr["steps"] == (t.screen_width > 0).sum(1).tolist()
    late = (t.screen_rank >= 0.75 * t.screen_width) & (t.screen_width > 0)
    assert scr["bottom_quarter_steps"] == late.sum(1).tolist()
    assert all(0 <= b <= n for b, n in zip(scr["bottom_quarter_steps"], scr["steps"]))
