"""Fast's per-image adaptation (``extend``, ``extend_budget``) and the screening diagnostic it acts on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overinterp import Exact, Fast, backselect, make_method
from overinterp.sis.scoring import target_logodds
from reference import TinyCNN, reference_fast

H, W = 6, 5  # P = 30

SETTINGS = [
    dict(step_fraction=0.2, pool=2.0, screened=0.5, exact=0.1, width=3, extend=2, extend_budget=3.0),
    dict(
        step_fraction=0.2,
        pool=1.0,
        screened=0.6,
        exact=0.2,
        width=2,
        recall=3,
        exact_cap=4,
        extend=3,
        extend_budget=4.0,
    ),
    dict(step_fraction=0.5, pool=1.0, screened=0.3, exact=0.0, width=1, recall=0, extend=1, extend_budget=2.0),
]


class HiddenFeatures(nn.Module):
    """Two classes, margin = 20 + Σ_j φ_j(x_j) over the 20 pixels of a 1×4×5 image.

    Decoys (ids 0–2): φ = −γ·x (γ = 0.3, 0.2, 0.1): masking x = 1 raises the margin by γ and
    the mask gradient says so. Hidden (ids 3–6): φ = −β·(2x − x²) (β = 1, 2, 3, 4): flat at
    x = 1, so the mask gradient is 0, yet masking raises the margin by β. The rest: φ = 0.
    The gradient screen ranks the decoys first, then the zero-gradient features by id: a
    screen of 4 holds the decoys and the lowest hidden id, and its best sits at the screen's
    last place while exact's choice (the largest β left) lies outside it.
    """

    def __init__(self) -> None:
        super().__init__()
        gamma = torch.zeros(20, dtype=torch.float64)
        beta = torch.zeros(20, dtype=torch.float64)
        gamma[:3] = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
        beta[3:7] = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
        self.register_buffer("gamma", gamma)
        self.register_buffer("beta", beta)

    def forward(self, x):
        v = x.flatten(1)
        margin = 20.0 - (self.gamma * v).sum(1) - (self.beta * (2 * v - v * v)).sum(1)
        return torch.stack([torch.zeros_like(margin), margin], 1)


def _exact_choice(model, x, gone: list[int]) -> int:
    """Exact's choice at the state where ``gone`` are masked (to 0): the best single removal."""
    best, arg = -float("inf"), -1
    for f in range(20):
        if f in gone:
            continue
        m = torch.zeros(20, dtype=torch.bool)
        m[gone + [f]] = True
        lo = float(target_logodds(model(torch.where(m.view(1, 1, 4, 5), 0.0, x)), torch.tensor([1]))[0])
        if lo > best:
            best, arg = lo, f
    return arg


@pytest.fixture(scope="module")
def model64():
    return TinyCNN(num_classes=3, height=H, width=W, seed=1).double()


@pytest.fixture(scope="module")
def images64():
    return torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_the_rule_widens_where_the_screen_misses_exact_and_recovers_its_choice():
    """After a step whose best sat in the screen's last quarter, the next step screens twice as
    many candidates and takes exact's choice at its state (id 6), which the plain screen misses
    (it takes id 4). Wrong: no rule, a rule reading the top of the screen, or widening blocks only."""
    model = HiddenFeatures().eval()
    x = torch.ones(1, 1, 4, 5, dtype=torch.float64)
    t = torch.tensor([1])
    settings = dict(screened=1.0, exact=0.0, width=4, pool=1.0, recall=0)
    plain = backselect(model, x, t, method=Fast(**settings), mask_value=0.0, progress=False)
    adapt = backselect(
        model, x, t, method=Fast(**settings, extend=2, extend_budget=4.0), mask_value=0.0, progress=False
    )
    p, a = plain.order[0].tolist(), adapt.order[0].tolist()
    assert p[0] == a[0] == 3  # the first screen (decoys + id 3) misses exact's 6 ...
    assert int(adapt.screen_rank[0, 0]) == 3 and int(adapt.screen_width[0, 0]) == 4  # ... its best at the bottom
    assert _exact_choice(model, x, [3]) == 6
    assert a[1] == 6 and int(adapt.screen_width[0, 1]) == 8  # widened, and exact's choice recovered
    assert p[1] == 4 and int(plain.screen_width[0, 1]) == 4  # the plain screen misses it again
    # the plain reference agrees with both, widths and ranks included
    base = torch.zeros(1, 1, 1, dtype=torch.float64)
    assert reference_fast(model, x[0], 1, base, step_fraction=0.05, **settings) == p
    diag: dict = {}
    assert reference_fast(model, x[0], 1, base, step_fraction=0.05, **settings, extend=2, diagnostics=diag) == a
    assert diag["width"] == adapt.screen_width[0, : len(diag["width"])].tolist()
    assert diag["rank"] == adapt.screen_rank[0, : len(diag["rank"])].tolist()


@pytest.mark.parametrize("params", SETTINGS)
def test_matches_the_plain_reference(model64, images64, params):
    """Budgets here never bind, so the order and the screen widths are the reference's rule exactly."""
    trace = backselect(model64, images64, method=Fast(**params), batch_size=4, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    ref_params = {k: v for k, v in params.items() if k != "extend_budget"}
    for i in range(len(images64)):
        diag: dict = {}
        ref = reference_fast(
            model64,
            images64[i],
            int(trace.target[i]),
            base,
            **{"recall": Fast().recall, "growth": Fast().growth, "first_block": Fast().first_block, **ref_params},
            diagnostics=diag,
        )
        assert trace.order[i].tolist() == ref
        singles = [w for w in trace.screen_width[i].tolist() if w > 0][-len(diag["width"]) :]
        assert singles == diag["width"]


@pytest.mark.parametrize("params", SETTINGS[:2])
def test_batching_invariance(model64, images64, params):
    method = Fast(**params)
    ref = backselect(model64, images64, method=method, batch_size=64, progress=False)
    for bs in (1, 5):
        t = backselect(model64, images64, method=method, batch_size=bs, progress=False)
        assert torch.equal(t.order, ref.order) and torch.equal(t.screen_width, ref.screen_width)
    for i in range(len(images64)):
        t = backselect(model64, images64[i : i + 1], method=method, batch_size=3, progress=False)
        assert torch.equal(t.order[0], ref.order[i]) and torch.equal(t.screen_width[0], ref.screen_width[i])


def test_settings_equal_to_exact_stay_exact(model64, images64):
    exact = backselect(model64, images64, method=Exact(), batch_size=7, progress=False)
    fast = backselect(
        model64, images64, method=Fast(screened=1.0, exact=1.0, exact_cap=30, extend=3), batch_size=7, progress=False
    )
    assert torch.equal(fast.order, exact.order)
    wide = backselect(
        model64, images64, method=Fast(screened=1.0, exact=0.0, width=30, extend=2), batch_size=7, progress=False
    )
    assert torch.equal(wide.order, exact.order)


def test_the_budget_caps_each_image_and_planned_cost_bounds_it(model64, images64):
    """Each image's forward passes stay within ⌊extend_budget × plan⌋; budget 1 (no recall)
    leaves no room, so the order is the unadapted one. Wrong: a cap over all images together,
    or one checked without reserving the rest of the image's plan, lets an image exceed its own."""
    base = dict(step_fraction=0.2, pool=1.0, screened=0.6, exact=0.1, width=2, recall=0)
    plain = backselect(model64, images64, method=Fast(**base), batch_size=4, progress=False)
    tight = backselect(
        model64, images64, method=Fast(**base, extend=3, extend_budget=1.0), batch_size=4, progress=False
    )
    assert torch.equal(plain.order, tight.order) and torch.equal(plain.screen_width, tight.screen_width)
    widened = False
    for budget in (1.1, 1.3, 2.0):
        method = Fast(**base, extend=3, extend_budget=budget)
        plan = method.planned_cost(H * W)
        for i in range(len(images64)):
            trace = backselect(model64, images64[i : i + 1], method=method, batch_size=4, progress=False)
            assert trace.meta["evaluations"] <= plan["forward"]
            assert trace.meta["forward_backward_passes"] == plan["forward_backward"]
            widened |= bool((trace.screen_width > 2).any())
    assert widened  # the rule did act somewhere, within the caps
    assert Fast(**base, extend=3, extend_budget=1.3).planned_cost(H * W)["forward"] == int(
        1.3 * Fast(**base).planned_cost(H * W)["forward"]
    )


@pytest.mark.parametrize(
    "params, words",
    [
        (dict(extend=-1), "extend"),
        (dict(extend=1.5), "extend"),
        (dict(extend_budget=0.9), "extend_budget"),
        (dict(extend_budget="x"), "extend_budget"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(params, words):
    with pytest.raises(ValueError, match=words):
        Fast(**params)
    with pytest.raises(ValueError, match=words):
        make_method("fast", **params)
