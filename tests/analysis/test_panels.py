"""Figure 3/S6 panels: image, SIS location in red, SIS only."""

import numpy as np
import pytest
import torch

from overinterp.analysis.panels import plot_sis_panels, save_sis_panels


def test_panels_show_the_image_the_location_and_the_sis_only(tmp_path):
    images = torch.rand(2, 3, 6, 5)
    keep = torch.zeros(2, 1, 6, 5, dtype=torch.bool)
    keep[0, 0, 1, 2] = keep[1, 0, 4, 0] = True
    fig = plot_sis_panels(images, keep, ["a", "b"])
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "SIS location", "SIS only"]
    assert axes[1][0].get_ylabel() == "b"
    shown = axes[0][0].get_images()[0].get_array()
    located = axes[0][1].get_images()[0].get_array()
    only = axes[0][2].get_images()[0].get_array()
    assert np.allclose(shown, images[0].permute(1, 2, 0).numpy())
    assert np.allclose(located[1, 2], [1, 0, 0]) and not np.allclose(located[0, 0], [1, 0, 0])
    assert np.allclose(only[1, 2], images[0, :, 1, 2].numpy()) and np.allclose(only[0, 0], 0.5)
    __import__("matplotlib.pyplot").pyplot.close(fig)
    paths = save_sis_panels(tmp_path / "p.png", images, keep[:, 0])
    assert paths == [tmp_path / "p.png"] and paths[0].stat().st_size > 0
    with pytest.raises(ValueError, match="titles"):
        plot_sis_panels(images, keep, ["only one"])
