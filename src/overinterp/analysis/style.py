"""Plot styling shared by every figure: each series differs in colour *and* marker *and*
line style, so figures stay readable in greyscale print; colours come from
``cividis`` (perceptually uniform, colour-vision-deficiency friendly)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot", "series_style", "MARKERS", "LINESTYLES"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def series_style(i: int, n: int) -> dict[str, Any]:
    """``plot`` keyword arguments for series ``i`` of ``n``: colour, marker and line style."""
    from matplotlib import colormaps

    cmap = colormaps["cividis"]
    # stay off the palest end of cividis so lines keep contrast against white
    position = 0.0 if n <= 1 else 0.85 * i / (n - 1)
    return {
        "color": cmap(position),
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
        "markersize": 5,
        "linewidth": 1.6,
    }
