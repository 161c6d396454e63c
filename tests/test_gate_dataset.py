"""MRD dataset construction: windows, lag expansion, labels on hand-built cases, stale scoring vs direct scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.gate.dataset import PairSet, expand_lags, label_balance, score_pairs, subsample
from toolkit.models.cocorrrec import CoCorrRec, CoCorrRecConfig


def test_windows_are_the_protocols_windows(synth_dataset):
    ds = synth_dataset
    assert np.array_equal(ds.windows(ds.train_user, ds.train_time), ds.train_seqs)
    n = np.diff(ds.user_ptr)
    assert np.array_equal(ds.windows(ds.valid_user, n[ds.valid_user] - 2), ds.valid_seqs)
    assert np.array_equal(ds.windows(ds.test_user, n[ds.test_user] - 1), ds.test_seqs)


def test_expand_lags_all_and_sample(synth_dataset):
    ds = synth_dataset
    all_t = expand_lags(ds, "train", 1, 5, "all")
    assert all_t.lag.min() >= 1 and all_t.lag.max() <= 5
    assert np.all(all_t.time - all_t.lag >= 1)  # stale window never empty
    # every training row with T >= 2 appears once per allowed lag min(T - 1, 5)
    expected = np.minimum(ds.train_time - 1, 5).clip(min=0).sum()
    assert len(all_t) == expected
    one = expand_lags(ds, "test", 2, 4, "sample", seed=3, n_cands=7)
    assert one.cands.shape[1] == 7 and np.unique(one.user).size == len(one)
    assert np.all((one.lag >= 2) & (one.lag <= np.minimum(one.time - 1, 4)))
    assert np.array_equal(one.lag, expand_lags(ds, "test", 2, 4, "sample", seed=3, n_cands=7).lag)
    capped = subsample(all_t, 100, seed=0)
    assert len(capped) == 100 and np.all(np.diff(capped.user) >= 0)  # a uniform subset, original order kept


def test_mrd_labels_on_a_hand_built_case():
    # two decisions, 5 candidate rows each (col 0 = the positive); a row is right when sigmoid(score) >= 0.5
    # agrees with its label, i.e. score >= 0 for the positive and score < 0 for a negative
    stale = np.array([[0.3, -1.0, -0.2, 0.1, -3.0],  # positive right, one negative wrong -> 4/5
                      [-0.1, 0.5, 0.0, -1.0, -2.0]], np.float32)  # positive wrong, two negatives wrong -> 2/5
    fresh = np.array([[0.3, -1.0, -0.2, -0.1, -3.0],  # fixes the stale error: all right
                      [-0.1, 0.5, -0.5, -1.0, -2.0]], np.float32)  # fixes one of three
    r = np.zeros((2, 4), np.float32)
    pairs = PairSet(np.array([0, 1]), np.array([3, 4]), np.array([1, 2]), r, r, {"stale": stale, "fresh": fresh})
    assert pairs.correct("stale").tolist() == [[True, True, True, False, True], [False, False, False, True, True]]
    np.testing.assert_allclose(pairs.soft_label(), [0.8, 0.4])
    bal = label_balance(pairs)
    assert bal["soft_label_mean"] == pytest.approx(0.6)
    assert bal["all_rows_right"] == 0.0 and bal["positive_row_right"] == 0.5
    assert bal["negative_rows_right"] == pytest.approx(5 / 8)
    assert bal["fresh_fixes_a_stale_error"] == 1.0 and bal["soft_label_mean_if_fresh"] == pytest.approx(0.8)
    assert bal["lag_counts"] == {1: 1, 2: 1}
    # the alternative "margin" target: does the stale correction separate the positive as well as a fresh one?
    # margins (positive - mean negative): stale 1.325 / 0.525, fresh 1.375 / 0.65 -> fresh is better on both
    np.testing.assert_array_equal(pairs.label("margin"), [0.0, 0.0])
    swapped = PairSet(pairs.user, pairs.time, pairs.lag, r, r, {"stale": fresh, "fresh": stale})
    np.testing.assert_array_equal(swapped.label("margin"), [1.0, 1.0])
    np.testing.assert_allclose(pairs.label("paper"), pairs.soft_label())


def test_stale_scores_equal_direct_scoring_with_the_earlier_windows_correction(synth_dataset):
    ds = synth_dataset
    torch.manual_seed(0)
    model = CoCorrRec(CoCorrRecConfig(n_items=ds.n_items)).eval()
    with torch.no_grad():  # make the corrections matter: P starts at 0
        model.scn.ttt.corr_p.fill_(0.7)
    targets = subsample(expand_lags(ds, "train", 1, 4, "all"), 40, seed=1)
    pairs = score_pairs(model, ds, targets)
    with torch.no_grad():
        for i in range(0, 40, 7):
            u, T, lag = int(targets.user[i]), int(targets.time[i]), int(targets.lag[i])
            h = ds.history(u)
            now = torch.tensor(h[max(0, T - 10):T]).view(1, -1)
            old = torch.tensor(h[max(0, T - lag - 10):T - lag]).view(1, -1)
            now = torch.nn.functional.pad(now, (0, 10 - now.shape[1]))
            old = torch.nn.functional.pad(old, (0, 10 - old.shape[1]))
            cands = torch.tensor(targets.cands[i:i + 1])
            ca, cb = model.corrections(old)
            np.testing.assert_allclose(pairs.scores["stale"][i], model.scn(now, cands, ca, cb)[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(pairs.scores["fresh"][i], model(now, cands)[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(pairs.scores["none"][i], model.scn(now, cands)[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(pairs.r_stale[i], model.scn.encode(old)[0].numpy(), atol=1e-5)
    assert not np.allclose(pairs.scores["stale"], pairs.scores["fresh"])  # the correction depends on the window
