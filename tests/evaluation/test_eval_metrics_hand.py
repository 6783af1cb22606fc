"""Every metric against examples worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.evaluation.metrics import (
    average_precision_at_k,
    cold_start_auc,
    evaluate_cold_start,
    evaluate_rankings,
    hit_rate_at_k,
    ndcg_at_k,
    per_user_metrics,
    precision_at_k,
    rankings_frame,
    recall_at_k,
    reciprocal_rank_at_k,
)

LOG2_3 = math.log2(3)


def frame(rows: list[tuple[str, str]], weight: list[float] | None = None) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID])
    out[WEIGHT] = weight if weight is not None else 1.0
    return out


# u1: list a b c d e, relevant {a, c, f}         -> hits 1 0 1 0 0, n_rel 3
# u2: list x y z w v, relevant {z}; x disliked   -> hits 0 0 1 0 0, n_rel 1
RECS = {"u1": ["a", "b", "c", "d", "e"], "u2": ["x", "y", "z", "w", "v"]}
TEST = frame(
    [("u1", "a"), ("u1", "c"), ("u1", "f"), ("u2", "z"), ("u2", "x")],
    weight=[1.0, 2.0, 1.0, 1.0, -1.0],
)
HITS = np.array([[1, 0, 1, 0, 0], [0, 0, 1, 0, 0]], dtype=bool)
N_REL = np.array([3, 1])


def test_precision_by_hand() -> None:
    # u1: P@1 = 1/1, P@3 = 2/3, P@5 = 2/5.  u2: P@1 = 0, P@3 = 1/3, P@5 = 1/5.
    np.testing.assert_allclose(precision_at_k(HITS, 1), [1.0, 0.0])
    np.testing.assert_allclose(precision_at_k(HITS, 3), [2 / 3, 1 / 3])
    np.testing.assert_allclose(precision_at_k(HITS, 5), [0.4, 0.2])
    # A list shorter than k still divides by k: 2 hits / 10.
    np.testing.assert_allclose(precision_at_k(HITS[:1], 10), [0.2])


def test_recall_by_hand() -> None:
    # u1: R@1 = 1/3, R@3 = 2/3, R@5 = 2/3 (f is never recommended).  u2: 0, 1, 1.
    np.testing.assert_allclose(recall_at_k(HITS, N_REL, 1), [1 / 3, 0.0])
    np.testing.assert_allclose(recall_at_k(HITS, N_REL, 3), [2 / 3, 1.0])
    np.testing.assert_allclose(recall_at_k(HITS, N_REL, 5), [2 / 3, 1.0])


def test_ndcg_by_hand() -> None:
    # u1 @5: DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal over min(5, 3) = 3 hits:
    #        1 + 1/log2(3) + 1/2 = 2.1309; NDCG = 1.5 / 2.1309 = 0.70392.
    # u1 @2: DCG = 1; ideal over min(2, 3) = 2: 1 + 1/log2(3) = 1.6309; NDCG = 0.61315.
    # u2 @5: DCG = 1/log2(4) = 0.5; ideal over 1 hit = 1; NDCG = 0.5.  u2 @2: 0.
    np.testing.assert_allclose(ndcg_at_k(HITS, N_REL, 5), [1.5 / (1.5 + 1 / LOG2_3), 0.5])
    np.testing.assert_allclose(ndcg_at_k(HITS, N_REL, 2), [1 / (1 + 1 / LOG2_3), 0.0])
    np.testing.assert_allclose(ndcg_at_k(HITS, N_REL, 5)[0], 0.7039180890341347)


def test_average_precision_by_hand() -> None:
    # u1 @5: hits at ranks 1 and 3: P@1 = 1, P@3 = 2/3; sum 5/3; / min(5, 3) = 3 -> 5/9.
    # u1 @2: hit at rank 1 only: 1 / min(2, 3) = 1/2 (n_relevant normalisation: 1/3).
    # u2 @5: hit at rank 3: P@3 = 1/3; / min(5, 1) = 1 -> 1/3.   u2 @2: 0.
    np.testing.assert_allclose(average_precision_at_k(HITS, N_REL, 5), [5 / 9, 1 / 3])
    np.testing.assert_allclose(average_precision_at_k(HITS, N_REL, 2), [0.5, 0.0])
    np.testing.assert_allclose(
        average_precision_at_k(HITS, N_REL, 2, normalization="n_relevant"), [1 / 3, 0.0]
    )


def test_reciprocal_rank_and_hit_rate_by_hand() -> None:
    # First hit: u1 at rank 1 -> 1; u2 at rank 3 -> 1/3 (0 when cut at k = 2).
    np.testing.assert_allclose(reciprocal_rank_at_k(HITS, 5), [1.0, 1 / 3])
    np.testing.assert_allclose(reciprocal_rank_at_k(HITS, 2), [1.0, 0.0])
    np.testing.assert_allclose(hit_rate_at_k(HITS, 5), [1.0, 1.0])
    np.testing.assert_allclose(hit_rate_at_k(HITS, 2), [1.0, 0.0])


def test_evaluate_rankings_averages_users_by_hand() -> None:
    result = evaluate_rankings(RECS, TEST, [2, 5])
    m = result["metrics"]
    assert result["n_users"] == 2
    # Means of the per-user values above.
    assert m["precision@5"] == pytest.approx((0.4 + 0.2) / 2)
    assert m["recall@5"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["ndcg@5"] == pytest.approx((0.7039180890341347 + 0.5) / 2)
    assert m["map@5"] == pytest.approx((5 / 9 + 1 / 3) / 2)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["hit_rate@5"] == pytest.approx(1.0)
    assert m["hit_rate@2"] == pytest.approx(0.5)
    # x was disliked (weight -1): with every test row relevant, u2 has x at rank 1.
    everything = evaluate_rankings(RECS, TEST, [1], relevance_threshold=None)
    assert everything["metrics"]["precision@1"] == pytest.approx(1.0)


def test_missing_recommendations_zero_or_skip() -> None:
    # u3 has a relevant item but no list: it scores 0 ("zero") or is left out ("skip").
    test = pd.concat([TEST, frame([("u3", "q")])], ignore_index=True)
    zero = evaluate_rankings(RECS, test, [5])
    skip = evaluate_rankings(RECS, test, [5], missing_recommendations="skip")
    assert zero["n_users"] == 3 and skip["n_users"] == 2
    assert zero["n_users_without_recommendations"] == 1
    assert zero["metrics"]["precision@5"] == pytest.approx((0.4 + 0.2 + 0) / 3)
    assert skip["metrics"]["precision@5"] == pytest.approx((0.4 + 0.2) / 2)


def test_remove_seen_shifts_lists_and_drops_seen_relevant() -> None:
    # Train holds (u1, b) and (u1, c). Removing seen items: u1's list becomes a d e,
    # and c (relevant but seen) leaves the relevant set: relevant {a, f}, hits 1 0 0.
    # P@2 = 1/2, R@2 = 1/2, AP@2 = 1 / min(2, 2) = 1/2.
    train = frame([("u1", "b"), ("u1", "c")])
    per_user = per_user_metrics(RECS, TEST, [2], train=train)
    assert per_user.loc["u1", "n_relevant"] == 2
    assert per_user.loc["u1", "precision@2"] == pytest.approx(0.5)
    assert per_user.loc["u1", "recall@2"] == pytest.approx(0.5)
    assert per_user.loc["u1", "map@2"] == pytest.approx(0.5)
    kept = per_user_metrics(RECS, TEST, [2], train=train, remove_seen=False)
    # Without removal: list a b, relevant {a, c, f}: P@2 = 1/2, R@2 = 1/3.
    assert kept.loc["u1", "recall@2"] == pytest.approx(1 / 3)


def test_input_formats_agree() -> None:
    # The same lists as a mapping, a matrix, a ranked frame and a scored frame.
    matrix = np.array([RECS["u1"], RECS["u2"]], dtype=object)
    long = rankings_frame(RECS)
    shuffled = long.sample(frac=1.0, random_state=3)
    scored = shuffled.assign(score=-shuffled["rank"].astype(float)).drop(columns="rank")
    results = [
        evaluate_rankings(rec, TEST, [3], users=users)["metrics"]
        for rec, users in ((RECS, None), (matrix, ["u1", "u2"]), (shuffled, None), (scored, None))
    ]
    for other in results[1:]:
        assert other == pytest.approx(results[0])


def test_rankings_frame_drops_duplicates_and_padding() -> None:
    matrix = np.array([["a", "a", "b", None], ["c", None, None, None]], dtype=object)
    out = rankings_frame(matrix, users=["u1", "u2"])
    assert out.to_dict("records") == [
        {USER_ID: "u1", ITEM_ID: "a", "rank": 1},
        {USER_ID: "u1", ITEM_ID: "b", "rank": 2},
        {USER_ID: "u2", ITEM_ID: "c", "rank": 1},
    ]


# Beyond-accuracy example.
# Train: u1 {a, b}, u2 {a, b}, u3 {a, c}, u4 {e}: 4 users; popularity a=3 b=2 c=1 e=1 d=0.
# Lists: u3 -> b d, u4 -> a b.  Test: u3 {d}, u4 {b} (relevance does not matter here).
BA_TRAIN = frame([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")])
BA_TRAIN = pd.concat([BA_TRAIN, frame([("u4", "e")])], ignore_index=True)
BA_RECS = {"u3": ["b", "d"], "u4": ["a", "b"]}
BA_TEST = frame([("u3", "d"), ("u4", "b")])


def test_coverage_novelty_popularity_by_hand() -> None:
    m = evaluate_rankings(BA_RECS, BA_TEST, [1, 2], train=BA_TRAIN)["metrics"]
    # Catalogue = train + test items = {a, b, c, d, e}. Top-2 lists cover {a, b, d}: 3/5.
    assert m["coverage@2"] == pytest.approx(3 / 5)
    assert m["coverage@1"] == pytest.approx(2 / 5)  # {b, a}
    # Self-information -log2(users/4): a 0.4150, b 1, d (unseen -> 1 user) 2.
    # u3: (1 + 2)/2 = 1.5; u4: (0.4150 + 1)/2 = 0.7075; mean 1.10376.
    assert m["novelty@2"] == pytest.approx((1.5 + (-math.log2(3 / 4) + 1) / 2) / 2)
    # ARP: u3 (2 + 0)/2 = 1, u4 (3 + 2)/2 = 2.5 -> 1.75.
    # Train ARP: u1 (3+2)/2 = 2.5, u2 2.5, u3 (3+1)/2 = 2, u4 1 -> 2.0. Lift 1.75/2 - 1.
    assert m["arp@2"] == pytest.approx(1.75)
    assert m["train_arp"] == pytest.approx(2.0)
    assert m["popularity_lift@2"] == pytest.approx(-0.125)
    assert m["arp@1"] == pytest.approx((2 + 3) / 2)
    # An explicit catalogue of 10 items: 3/10.
    catalog = list("abcdefghij")
    wide = evaluate_rankings(BA_RECS, BA_TEST, [2], train=BA_TRAIN, catalog=catalog)
    assert wide["metrics"]["coverage@2"] == pytest.approx(0.3)


def test_diversity_by_hand() -> None:
    # Vectors a (1,0), b (0,1), d (1,1).  u3 [b, d]: cos = 1/sqrt(2), distance 0.29289;
    # u4 [a, b]: cos 0, distance 1.  Mean 0.64645.
    vectors = pd.DataFrame([[1, 0], [0, 1], [1, 1]], index=["a", "b", "d"], dtype=float)
    # Categories a x, b x, d y.  u3 [b, d]: 2 categories / 2 items = 1, the pair differs (1);
    # u4 [a, b]: 1 / 2 = 0.5, the pair is the same (0).  Means 0.75 and 0.5.
    categories = {"a": "x", "b": "x", "d": "y"}
    m = evaluate_rankings(BA_RECS, BA_TEST, [2], item_vectors=vectors, item_categories=categories)[
        "metrics"
    ]
    assert m["ild_content@2"] == pytest.approx(((1 - 1 / math.sqrt(2)) + 1) / 2)
    assert m["category_share@2"] == pytest.approx(0.75)
    assert m["category_ild@2"] == pytest.approx(0.5)
    # Three items x, x, y: 2 distinct / 3 = 2/3; pairs (x,x) same, (x,y) (x,y) differ: 2/3.
    three = evaluate_rankings(
        {"u": ["a", "b", "d"]}, frame([("u", "a")]), [3], item_categories=categories
    )["metrics"]
    assert three["category_share@3"] == pytest.approx(2 / 3)
    assert three["category_ild@3"] == pytest.approx(2 / 3)
    # Mapping input for vectors gives the same; items without a vector are skipped:
    # [a, zz, b] has one pair (a, b) with distance 1.
    mapping = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
    skip = evaluate_rankings(
        {"u": ["a", "zz", "b"]}, frame([("u", "a")]), [3], item_vectors=mapping
    )["metrics"]
    assert skip["ild_content@3"] == pytest.approx(1.0)


def test_user_segments_by_hand() -> None:
    # Train counts: u1 1 event (cold, < 2), u2 2 events (medium, 2 <= n < 3), u3 3 (heavy).
    train = frame(
        [("u1", "t1"), ("u2", "t1"), ("u2", "t2"), ("u3", "t1"), ("u3", "t2"), ("u3", "t3")]
    )
    recs = {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["e", "f"]}
    test = frame([("u1", "a"), ("u2", "d"), ("u3", "x")])
    result = evaluate_rankings(recs, test, [2], train=train, user_segments=(2, 3))
    slices = result["slices"]
    # u1 hit at rank 1 -> ndcg 1; u2 hit at rank 2 -> 1/log2(3) = 0.6309; u3 no hit -> 0.
    assert slices["users_cold"]["n_users"] == 1
    assert slices["users_cold"]["metrics"]["ndcg@2"] == pytest.approx(1.0)
    assert slices["users_medium"]["metrics"]["ndcg@2"] == pytest.approx(1 / LOG2_3)
    assert slices["users_heavy"]["metrics"]["ndcg@2"] == pytest.approx(0.0)
    assert result["metrics"]["ndcg@2"] == pytest.approx((1 + 1 / LOG2_3) / 3)


def test_cold_item_slice_by_hand() -> None:
    # Train items {w, b} (both from u9); cold (absent from train) test items: a, d.
    # u1: list a b, relevant a (cold) and b (warm); u2: list c d, relevant d (cold) and
    # w (warm). Only cold relevant items count in this slice.
    train = frame([("u9", "w"), ("u9", "b")])
    recs = {"u1": ["a", "b"], "u2": ["c", "d"]}
    test = frame([("u1", "a"), ("u1", "b"), ("u2", "d"), ("u2", "w")])
    cold = evaluate_rankings(recs, test, [2], train=train)["slices"]["items_cold"]
    # Cold relevant: u1 {a} hit at rank 1 -> recall 1, ndcg 1; u2 {d} at rank 2 -> recall
    # 1, ndcg 1/log2(3), precision 1/2 each.
    assert cold["n_users"] == 2
    assert cold["metrics"]["recall@2"] == pytest.approx(1.0)
    assert cold["metrics"]["ndcg@2"] == pytest.approx((1 + 1 / LOG2_3) / 2)
    assert cold["metrics"]["precision@2"] == pytest.approx(0.5)
    # With an explicit cold list {d}: only u2 is in the slice.
    only_d = evaluate_rankings(recs, test, [2], train=train, cold_items=["d"])
    assert only_d["slices"]["items_cold"]["n_users"] == 1


def test_cold_start_auc_by_hand() -> None:
    # Candidates p q r s with scores .9 .1 .5 .5; positives p, r; negatives q, s.
    # Pairs: (p,q) win, (p,s) win, (r,q) win, (r,s) tie = 1/2 -> 3.5 / 4 = 0.875.
    auc = cold_start_auc(np.array([[0.9, 0.1, 0.5, 0.5]]), np.array([[1, 0, 1, 0]], bool))
    assert auc[0] == pytest.approx(0.875)
    # No negative (or no positive) -> undefined.
    assert np.isnan(cold_start_auc(np.array([[0.1, 0.2]]), np.array([[1, 1]], bool))[0])


def test_evaluate_cold_start_by_hand() -> None:
    cold = ["p", "q", "r", "s"]
    scores = pd.DataFrame(
        [[0.9, 0.1, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4]], index=["u1", "u2"], columns=cold
    )
    test = frame([("u1", "p"), ("u1", "r"), ("u2", "p"), ("u2", "warm")])
    out = evaluate_cold_start(scores, test, cold, [1, 2])
    # u1 ranks p r s q: positives p r at ranks 1, 2 -> AUC 1, recall@1 1/2, recall@2 1.
    # u2 ranks s r q p: positive p last -> AUC 0, recall@2 0.  ("warm" is not cold.)
    assert out["n_users"] == 2
    assert out["metrics"]["auc"] == pytest.approx(0.5)
    assert out["metrics"]["recall@1"] == pytest.approx(0.25)
    assert out["metrics"]["recall@2"] == pytest.approx(0.5)
    # Long input gives the same; a missing score ranks last.
    long = scores.stack().rename("score").rename_axis([USER_ID, ITEM_ID]).reset_index()
    assert evaluate_cold_start(long, test, cold, [1, 2])["metrics"] == out["metrics"]
    partial = long.loc[~((long[USER_ID] == "u2") & (long[ITEM_ID] == "p"))]
    assert evaluate_cold_start(partial, test, cold, [2])["metrics"]["auc"] == pytest.approx(0.5)


def test_empty_inputs() -> None:
    # No list at all: every test user scores 0; no test user: metrics are undefined (NaN).
    empty_recs = pd.DataFrame({USER_ID: [], ITEM_ID: []}, dtype=str)
    none = evaluate_rankings(empty_recs, TEST, [5], train=BA_TRAIN)
    assert none["n_users"] == 2 and none["metrics"]["ndcg@5"] == 0.0
    assert none["metrics"]["coverage@5"] == 0.0
    no_test = evaluate_rankings(RECS, TEST.iloc[:0], [5])
    assert no_test["n_users"] == 0 and math.isnan(no_test["metrics"]["ndcg@5"])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        evaluate_rankings(RECS, TEST, [0])
    with pytest.raises(ValueError):
        evaluate_rankings(np.array([["a"]]), TEST, [1])  # matrix without users
    with pytest.raises(ValueError):
        evaluate_rankings(RECS, TEST.drop(columns=[ITEM_ID]), [1])
