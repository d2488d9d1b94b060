"""analysis.faithfulness: the per-image screening diagnostic, summarised for reports."""

from __future__ import annotations

from types import SimpleNamespace

from overinterp.analysis.faithfulness import screening_report


def test_screening_report_flags_the_unsure_images():
    """Wrong: a share over all images together (no per-image flags), or steps counted from the
    doublings instead of the screened steps, gives other shares."""
    trace = SimpleNamespace(
        meta={
            "screening": {
                "steps": [40, 40, 10],
                "bottom_quarter_steps": [2, 20, 0],
                "extensions": [0, 7, 0],
                "unresolved_steps": [0, 3, 0],
            }
        }
    )
    rep = screening_report(trace)
    assert rep["share"] == [0.05, 0.5, 0.0] and rep["flagged"] == [1]
    assert rep["extensions"] == [0, 7, 0]
    assert screening_report(trace, flag_share=0.04)["flagged"] == [0, 1]
    assert screening_report(SimpleNamespace(meta={})) is None


def test_per_image_diagnostic_follows_its_images_through_concatenation():
    """Dataset jobs join shard traces: each image keeps its own diagnostic (wrong: the first
    shard's lists for every image), and a trace without one drops it rather than misalign."""
    import torch

    from overinterp import Exact, backselect
    from overinterp.sis import concat_traces

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double().eval()
    x = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = backselect(model, x[:2], method=Exact(), progress=False)
    b = backselect(model, x[2:], method=Exact(), progress=False)
    a.meta["screening"] = {"steps": [3, 4], "bottom_quarter_steps": [1, 0]}
    b.meta["screening"] = {"steps": [5], "bottom_quarter_steps": [2]}
    joined = concat_traces([a, b])
    assert joined.meta["screening"] == {"steps": [3, 4, 5], "bottom_quarter_steps": [1, 0, 2]}
    del b.meta["screening"]
    assert "screening" not in concat_traces([a, b]).meta
    assert "screening" not in concat_traces([b, b]).meta
