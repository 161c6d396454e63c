"""Ranking metrics against hand-worked examples, pessimistic ties, and speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.metrics import METRIC_NAMES, positive_rank, ranking_metrics, roc_auc


def test_hand_worked_two_users_with_a_tie():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # positive on top: rank 0
            [0.5, 0.9, 0.5, 0.1],  # one negative above, one tied (counts above): rank 2
        ]
    )
    m = ranking_metrics(scores)
    assert set(m) == set(METRIC_NAMES)
    assert all(type(v) is float for v in m.values())
    assert m["uauc"] == pytest.approx((3 / 3 + 1 / 3) / 2)
    for k in (5, 10, 20):
        assert m[f"hr@{k}"] == pytest.approx(1.0)
        assert m[f"ndcg@{k}"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 2)


def test_cutoffs_separate_at_rank_seven():
    scores = np.zeros((1, 30))
    scores[0, 0] = 0.5
    scores[0, 1:8] = 0.9  # 7 negatives above the positive -> rank 7 (8th place)
    m = ranking_metrics(scores)
    assert m["hr@5"] == 0.0 and m["ndcg@5"] == 0.0
    assert m["hr@10"] == 1.0 and m["ndcg@10"] == pytest.approx(1 / math.log2(9))
    assert m["hr@20"] == 1.0 and m["ndcg@20"] == pytest.approx(1 / math.log2(9))
    assert m["uauc"] == pytest.approx(22 / 29)


def test_constant_scores_are_the_worst_case():
    m = ranking_metrics(np.ones((4, 100)))
    assert all(v == 0.0 for v in m.values())


def test_perfect_scores_and_pos_index():
    scores = np.tile(np.arange(100, dtype=np.float32), (3, 1))  # column 99 is the highest
    m = ranking_metrics(scores, pos_index=99)
    assert all(v == pytest.approx(1.0) for v in m.values())
    assert ranking_metrics(scores, pos_index=-1) == m
    worst = ranking_metrics(scores, pos_index=0)
    assert worst["uauc"] == 0.0 and worst["hr@20"] == 0.0


def test_infinite_scores_follow_the_same_tie_rule():
    scores = np.array([[np.inf, np.inf, 0.0], [-np.inf, 1.0, 2.0], [np.inf, 1.0, -np.inf]])
    m = ranking_metrics(scores)
    # ranks: 1 (tie at +inf), 2 (bottom), 0 -> uauc = mean(1/2, 0, 1)
    assert m["uauc"] == pytest.approx(0.5)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4) + 1) / 3)


def test_positive_rank_is_pessimistic_even_for_nan():
    scores = np.array([[1.0, 1.0, 0.0], [np.nan, 0.0, 1.0], [2.0, np.nan, 1.0], [3.0, 2.0, 1.0]])
    assert positive_rank(scores).tolist() == [1, 2, 1, 0]
    assert positive_rank(scores, pos_index=2).tolist() == [2, 1, 2, 2]


def test_pointwise_auc_hand_worked_and_vs_sklearn():
    scores = np.array([[0.9, 0.1], [0.5, 0.5]])
    labels = np.array([[1, 0], [1, 0]])
    # pairs (pos, neg): (.9,.1)=1 (.9,.5)=1 (.5,.1)=1 (.5,.5)=tie=1/2 -> 3.5/4
    assert ranking_metrics(scores, labels=labels)["auc"] == pytest.approx(0.875)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = np.round(rng.standard_normal((200, 20)), 1)  # many ties
    y = (rng.random((200, 20)) < 0.2).astype(int)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y.ravel(), s.ravel()), abs=1e-12)


def test_accepts_a_torch_tensor():
    torch = pytest.importorskip("torch")
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True).to(torch.bfloat16)
    m = ranking_metrics(scores, labels=torch.tensor([[1, 0, 0], [1, 0, 0]]))
    assert m["hr@5"] == 1.0 and m["uauc"] == 0.5 and m["auc"] == 0.5


@pytest.mark.parametrize(
    "scores, kwargs, message",
    [
        (np.zeros(5), {}, "2-D"),
        (np.zeros((3, 1)), {}, "2 candidates"),
        (np.zeros((0, 5)), {}, "at least 1 user"),
        (np.zeros((2, 5)), {"pos_index": 5}, "out of range"),
        (np.array([[np.nan, 1.0]]), {}, "NaN"),
        (np.zeros((2, 3)), {"labels": np.zeros((2, 2))}, "labels must match"),
        (np.zeros((2, 3)), {"labels": np.full((2, 3), 2)}, "0 or 1"),
        (np.zeros((2, 3)), {"labels": np.zeros((2, 3))}, "both classes"),
    ],
)
def test_bad_input_is_a_toolkit_error(scores, kwargs, message):
    with pytest.raises(ToolkitError, match=message):
        ranking_metrics(scores, **kwargs)


def test_100k_users_by_100_candidates_is_fast():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((100_000, 100)).astype(np.float32)
    scores[:, 0] += 1.0
    best = min(_timed(ranking_metrics, scores) for _ in range(3))
    print(f"ranking_metrics 100k x 100: {best * 1e3:.0f} ms")
    assert best < 1.0


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
