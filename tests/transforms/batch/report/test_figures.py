"""Each figure kind draws its data (never a blank image), and says so when there is nothing to draw."""

from __future__ import annotations

from datetime import date

import pytest

from transforms.batch.report import figures as F

PNG = b"\x89PNG\r\n\x1a\n"


def drawn(png: bytes) -> float:
    assert png.startswith(PNG)
    return F.ink_share(png)


def test_radar_draws_both_plants_and_names_missing_evidence():
    png = F.radar({"ref": {"connectivity": 4.5, "automation": 4}, "leg": {"connectivity": 1.0, "automation": None}},
                  "readiness")
    assert drawn(png) > 0.03


def test_heatmap_pareto_bars_and_series_have_ink():
    assert drawn(F.heatmap(["L1 coat", "L2 coat"], ["mixing", "coating"], [[1.0, 0.5], [None, 0.0]], "d", "s")) > 0.03
    assert drawn(F.pareto(["a", "b", "c"], [10, 3, 1], "scrap", "units")) > 0.02
    assert drawn(F.grouped_bars(["Li", "Ni"], {"ref": [1.0, 5.0], "leg": [2.0, 1.0]}, "loss", "kg")) > 0.02
    days = [date(2026, 11, d) for d in (28, 29, 30)]
    assert drawn(F.series_with_share(days, {"ref": [6.4, 6.2, None]}, {"ref": [1.0, 1.0, 0.9]}, "e", "kWh",
                                     "metered")) > 0.02


def test_nothing_to_draw_gives_a_figure_that_says_so():
    png = F.pareto([], [], "scrap", "units")
    assert 0 < drawn(png) < 0.2  # text only


def test_ink_share_of_a_blank_image_is_zero():
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    assert F.ink_share(buf.getvalue()) == pytest.approx(0.0)


def test_roc_reliability_and_ranked_bars_have_ink_and_say_when_there_is_nothing():
    assert drawn(F.roc([0.0, 0.1, 0.4, 1.0], [0.0, 0.5, 0.8, 1.0], 0.81, "roc")) > 0.03
    assert drawn(F.reliability([0.01, 0.05, 0.2], [0.0, 0.04, 0.3], [100, 100, 100], "rel")) > 0.02
    assert drawn(F.ranked_bars(["a.b.mean", "c.d.oos_share"], [0.12, 0.03], [0.01, 0.005], "drivers", "AUC")) > 0.02
    assert 0 < drawn(F.roc([], [], None, "roc")) < 0.2
    assert 0 < drawn(F.reliability([], [], [], "rel")) < 0.2
