"""Model options from a spec (``smallcnn?width=…``) are checked before anything is allocated
(issue 26, item 7): unknown names, wrong types, values outside the bounds declared with the
architecture, and networks whose weights would not fit in this machine's memory."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from overinterp.errors import UserInputError
from overinterp.models import registry
from overinterp.models.registry import build_network, check_options, register_model


def test_options_are_checked_against_the_architecture():
    """Guards against passing options straight to the builder (TypeError/RuntimeError tracebacks)."""
    with pytest.raises(UserInputError, match="has no option bogus; its options: in_channels, width"):
        build_network("smallcnn", 3, bogus=1)
    with pytest.raises(UserInputError, match="option width is an integer, got 'abc'"):
        build_network("smallcnn", 3, width="abc")
    with pytest.raises(UserInputError, match="option width is an integer, got True"):
        build_network("smallcnn", 3, width=True)
    with pytest.raises(UserInputError, match=r"option width must be in \[1, 65536\], got 0"):
        build_network("smallcnn", 3, width=0)
    with pytest.raises(UserInputError, match=r"option dropout must be in \[0, 1\], got 1.5"):
        build_network("wrn28_10", 3, depth=10, widen_factor=1, dropout=1.5)
    with pytest.raises(UserInputError, match="num_classes must be an integer >= 1"):
        build_network("smallcnn", 0)
    assert isinstance(build_network("smallcnn", 3, width=2), nn.Module)


def test_a_network_larger_than_the_memory_is_refused_before_allocating(monkeypatch):
    """Guards against checking the size after building (the allocation has happened) or not at
    all (the attack: 10.8 TB for width=99999999999, 2.8e14 bytes for a label of 2^40)."""
    import overinterp._memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10_000)  # bytes
    entry = registry.get_model_entry("smallcnn")
    devices = []

    def builder(**kw):
        devices.append(torch.empty(0).device.type)  # "meta" inside the check, "cpu" for a real build
        return entry.builder(**kw)

    monkeypatch.setitem(registry._REGISTRY, "smallcnn", dataclasses.replace(entry, builder=builder))  # noqa: SLF001
    with pytest.raises(UserInputError, match=r"model smallcnn \(num_classes=3, width=64\) would need .* of memory"):
        check_options("smallcnn", 3, {"width": 64})
    with pytest.raises(UserInputError, match=r"num_classes=1099511627777, width=1\) would need"):
        build_network("smallcnn", 2**40 + 1, width=1)
    assert devices == ["meta", "meta"]  # checked on the meta device, never built for real


def test_an_architecture_without_meta_support_still_builds():
    """Guards against refusing valid models whose initialisation has no ``meta`` version."""

    @register_model("_no_meta_test_arch", "test only")
    def no_meta(num_classes: int = 10) -> nn.Module:
        net = nn.Linear(4, num_classes)
        float(net.weight.detach().sum())  # a host read: impossible on the meta device
        return net

    try:
        assert isinstance(build_network("_no_meta_test_arch", 3), nn.Linear)
    finally:
        registry._REGISTRY.pop("_no_meta_test_arch", None)  # noqa: SLF001
