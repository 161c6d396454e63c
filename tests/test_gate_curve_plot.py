"""curve.png: metric vs request rate, standard-error bands, labelled always/never lines, honest y-range, legend off
the data. Checked on the figure's own objects (axes limits, texts, legends), from a curve.json-shaped result."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.gate.curve import SHOWN, figure, plot, y_limits


def fake_result(gain: float, se: float, none_drop: float, n_points: int = 6) -> dict:
    """A curve.json-shaped result: never at 0.2, always `gain` above it, policies in between with band `se`."""
    rng = np.random.default_rng(0)
    never = {k: 0.2 + i * 0.1 for i, k in enumerate(SHOWN)}

    def pt(rate, k_shift):
        return {"request_rate": rate, "budget": rate, **{k: never[k] + k_shift * gain for k in SHOWN},
                **{f"se_vs_never_{k}": se for k in SHOWN}}

    rates = np.linspace(0.05, 1.0, n_points)
    policies = {name: {"deployable": name != "oracle",
                       "points": [pt(float(r), float(np.clip(r * f + rng.normal(0, 0.1), 0, 3))) for r in rates]}
                for name, f in (("gate", 1.5), ("random", 1.0), ("oracle", 3.0))}
    policies["lof"] = {**policies["random"], "native": pt(0.3, 0.4)}
    return {"endpoints": {"always": {k: never[k] + gain for k in SHOWN}, "never": dict(never),
                          "none": {k: never[k] - none_drop for k in SHOWN}},
            "policies": policies, "lags": [1, 50], "decisions": 600, "candidates": 100,
            "update_kind": "cocorrrec (history): TTT state correction",
            "summary": {"always_minus_never_se": {k: se for k in SHOWN},
                        "gain_is_significant": {k: gain > 2 * se for k in SHOWN}}}


@pytest.mark.parametrize("gain, se, none_drop", [(0.004, 0.0007, 0.011), (0.0003, 0.001, 0.003),
                                                 (0.0, 0.0, 0.0)], ids=["clear-gain", "noise", "degenerate"])
def test_curve_figure_reads_right(gain, se, none_drop):
    import matplotlib.pyplot as plt

    result = fake_result(gain, se, none_drop)
    fig = figure(result)
    try:
        assert len(fig.legends) == 1  # one legend, under the panels
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any(lbl.startswith("always") for lbl in labels) and any(lbl.startswith("never") for lbl in labels)
        assert "oracle (knows test labels: upper bound)" in labels
        for ax, k in zip(fig.axes, SHOWN):
            assert ax.get_legend() is None  # nothing drawn over the data
            lo, hi = ax.get_ylim()
            ends = result["endpoints"]
            # every point with its band, and always +- its band, inside the range
            for entry in result["policies"].values():
                for p in entry["points"]:
                    assert lo <= p[k] - p[f"se_vs_never_{k}"] and p[k] + p[f"se_vs_never_{k}"] <= hi
            assert lo <= ends["always"][k] - se and ends["always"][k] + se <= hi
            # not a sliver: at least 4 standard errors and 1% of the metric's level
            assert hi - lo >= max(4 * se, 0.01 * ends["never"][k])
            texts = [t.get_text() for t in ax.texts]
            assert f" always {ends['always'][k]:.4f}" in texts and f" never {ends['never'][k]:.4f}" in texts
            assert ("always - never within 2 s.e.: noise" in texts) == (not gain > 2 * se)
            assert len(ax.collections) >= len(result["policies"])  # a band per policy
            assert ax.get_xlabel().startswith("request rate") and k.upper().split("@")[0] in ax.get_ylabel().upper()
    finally:
        plt.close(fig)
    assert plot(result)[:8] == b"\x89PNG\r\n\x1a\n"


def test_none_far_below_is_named_not_drawn():
    import matplotlib.pyplot as plt

    result = fake_result(0.004, 0.0007, none_drop=0.2)
    fig = figure(result)
    try:
        for ax, k in zip(fig.axes, SHOWN):
            assert ax.get_ylim()[0] > result["endpoints"]["none"][k]
            assert f"none (no correction) = {result['endpoints']['none'][k]:.4f}, off the range" in \
                [t.get_text() for t in ax.texts]
    finally:
        plt.close(fig)


def test_y_limits():
    lo, hi = y_limits([0.5, 0.5001], [0.0], 0.5)  # flat: at least 1% of the level, centred
    assert hi - lo >= 0.005 and lo < 0.5 < hi
    lo, hi = y_limits([0.1, 0.2], [0.05], 0.1)
    assert lo < 0.1 and hi > 0.2 and hi - lo == pytest.approx(0.2 * 1.2)


def _pt(rate, ndcg, budget):
    return {"budget": budget, "request_rate": rate, "uauc": ndcg, "ndcg@10": ndcg, "hr@10": ndcg}


def test_policies_are_compared_at_the_same_request_rate():
    """A baseline that overspends its budget (requests 40% at budget 0.3) is not "better" at that budget: the gate
    is compared with the baseline's curve at the gate's own achieved rate, and the exact-rate share interpolates."""
    from toolkit.gate.curve import at_rate, summarise

    endpoints = {"never": _pt(0.0, 0.20, 0.0), "always": _pt(1.0, 0.30, 1.0), "none": _pt(0.0, 0.1, 0.0)}
    gate = {"deployable": True, "points": [_pt(0.1, 0.26, 0.1), _pt(0.3, 0.28, 0.3), _pt(1.0, 0.30, 1.0)]}
    greedy = {"deployable": True, "points": [_pt(0.2, 0.262, 0.1), _pt(0.4, 0.285, 0.3), _pt(1.0, 0.30, 1.0)]}
    assert at_rate(greedy, endpoints, 0.1, "ndcg@10") == pytest.approx(0.231)  # halfway from never to (0.2, 0.262)
    assert at_rate(greedy, endpoints, 0.3, "ndcg@10") == pytest.approx(0.2735)
    s = summarise(endpoints, {"gate": gate, "lag": greedy})
    assert s["gate_at_or_above"]["lag"]["ndcg@10"] == "2/2"  # although 0.262 > 0.26 and 0.285 > 0.28 per budget
    assert s["recovered_share_at_exact_rate"] == {"gate": pytest.approx(0.6), "lag": pytest.approx(0.31)}
    worse = {"deployable": True, "points": [_pt(0.1, 0.27, 0.1), _pt(0.3, 0.27, 0.3), _pt(1.0, 0.30, 1.0)]}
    assert summarise(endpoints, {"gate": gate, "lag": worse})["gate_at_or_above"]["lag"]["ndcg@10"] == "1/2"
