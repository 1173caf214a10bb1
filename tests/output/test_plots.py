"""The plots' labels speak as the text does: "FLOPs" for a count."""

import re

import pytest

from flopbench.output import plots, text


def test_the_flops_axis_writes_flops_as_the_text_does(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    closed = []

    class Recording:
        """pyplot, keeping each figure it is asked to close."""

        def __getattr__(self, name):
            return getattr(pyplot, name)

        def close(self, fig):
            closed.append(fig)
            pyplot.close(fig)

    row = {"model": "gpt2", "seq_len": 1024, "N_matmul": 123_532_032, "counted_forward": 2.5e6}
    series = [{"key": "counted_forward", "phase": "forward", "kind": "counted", "name": "torch fwd"}]
    plots.plot_flops_per_token(Recording(), [row], series, tmp_path / "flops.png")
    tick = closed[0].axes[0].yaxis.get_major_formatter()(2.5e6)
    assert tick == "2.5 MFLOPs"
    assert re.sub(r"[\d.]+ ", "", tick) == re.sub(r"[\d.]+ ", "", text.flops(2_500_000))  # "2.500 MFLOPs"
