"""The released Robotic Steering selection (circuits.released_selection), heads.json, and the variance / CMA scores.

The hand-built cases use 4 episodes x 2 frames (an "a" frame with action +1, a "b" frame with -1)
and units made of orthogonal basis vectors, so every cosine, weight and MSE is a small fraction
derived in the comments. With k = 1 or k = 6 (all 6 frames of the other episodes) no neighbour
order is ambiguous, and an action of +-1 averaged over neighbours that all share it is exact.

Units (frame i of episode e and class c; "partner" = a frame of another episode):
- P  = e_class: 3 exact same-class matches; MSE 0 at k <= 3 (any k <= 3 picks only those), ~4e-16 at k = 6.
- W  = e_wpair: one exact match, of the *other* class (ep0.a-ep1.b, ep1.a-ep0.b, ep2.a-ep3.b, ep3.a-ep2.b):
  MSE 4 at k = 1, ~4 at k = 6.
- A1 = e_pair1 + sqrt(3/4) e_wpair + sqrt(1/4) e_own (|.|^2 = 2): same-class partner in episodes {0,1},{2,3}
  at cos 1/2 (w = 2), the W-decoy at cos 3/8 (w = 8/5), the rest at cos 0 (w = 1, actions summing to 0):
  k = 1 -> 0; k = 6 -> pred (2 - 8/5) / (2 + 8/5 + 4) = 1/19, MSE (18/19)^2.
- A2 = e_pair2 + sqrt(3/4) e_wpair + sqrt(1/2) e_own (|.|^2 = 9/4): partner in {0,2},{1,3} at cos 4/9 (w = 9/5),
  decoy at 1/3 (w = 3/2): k = 1 -> 0; k = 6 -> pred (9/5 - 3/2) / (9/5 + 3/2 + 4) = 3/73, MSE (70/73)^2.
- Z  = e_class + e_own: same class at cos 1/2 (w = 2), other class at 0: k = 1 -> 0; k = 6 -> pred 1/3, MSE 4/9.
- Q  = e_class + sqrt(4/3) e_wpair (|.|^2 = 7/3): decoy nearest (cos 4/7, w = 7/3), same class at 3/7 (w = 7/4):
  k = 1 -> 4; k = 6 -> pred (21/4 - 7/3 - 2) / (21/4 + 7/3 + 2) = 11/115, MSE (104/115)^2.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from robosteer.circuits.activations import flatten_tower
from robosteer.circuits.greedy import greedy_select
from robosteer.circuits.heads_json import read_heads_json, write_heads_json
from robosteer.circuits.knn import KNNConfig, knn_scores
from robosteer.circuits.mediation import baseline_means, cma_scores
from robosteer.circuits.released_selection import select_heads_knn
from robosteer.circuits.scores import HeadScores
from robosteer.circuits.variance import variance_scores
from robosteer.masks import HeadMask
from robosteer.sites import Head, HeadLayout

LAYOUT = HeadLayout({"llm": (3, 2)})
EPISODES = np.repeat(np.arange(4), 2)
CLASS = np.tile([0, 1], 4)
ACTIONS = np.where(CLASS == 0, 1.0, -1.0)[:, None]
D = 20


def _basis(index, coef=1.0) -> np.ndarray:
    out = np.zeros((8, D))
    out[np.arange(8), index] = coef
    return out


OWN = _basis(10 + np.arange(8))
WPAIR = _basis(6 + 2 * (EPISODES // 2) + (CLASS ^ (EPISODES % 2)))
P = _basis(CLASS)
W = WPAIR
A1 = _basis(2 + 2 * (EPISODES // 2) + CLASS) + np.sqrt(3 / 4) * WPAIR + np.sqrt(1 / 4) * OWN
A2 = _basis(2 + 2 * (EPISODES % 2) + CLASS) + np.sqrt(3 / 4) * WPAIR + np.sqrt(1 / 2) * OWN
Z = P + OWN
Q = P + np.sqrt(4 / 3) * WPAIR


def units(*columns) -> np.ndarray:
    """Six (8, D) units, layer-major, -> activations (N=8, layers=3, heads=2, D)."""
    return np.stack(columns, axis=1).reshape(8, 3, 2, D)


def close(a, b, tol=1e-6) -> bool:
    return abs(float(a) - float(b)) < tol


# A1, A2, P first in head order: at k = 1 all three tie at 0, so the k = 1 top 2 is {A1, A2}, whose
# concatenation has the decoy nearest (joint cos (3/4 + 3/4) / (2 + 9/4) = 6/17 vs partners' 4/17): MSE 4.
# At k = 6 the top 2 is {P, A1}: concatenated (|.|^2 = 3), ep0.a sees its A1 partner at cos 2/3 (w = 3), the two
# other same-class frames at 1/3 (w = 3/2), the decoy at 1/4 (w = 4/3) and two others at 0 (w = 1):
# pred (3 + 3 - 4/3 - 2) / (3 + 3 + 4/3 + 2) = 2/7, MSE (5/7)^2 = 25/49 < 4, so the best k is 6.
DIFFER = units(A1, A2, P, W, W, W)


def test_heads_are_ranked_separately_at_each_k():
    sel = select_heads_knn(DIFFER, ACTIONS, EPISODES, k_grid=(1, 6), n=2)
    at1, at6 = sel.rankings[1], sel.rankings[6]
    assert [u for _, u in at1[:3]] == [(0, 0), (0, 1), (1, 0)] and [m for m, _ in at1[:3]] == [0.0, 0.0, 0.0]
    assert [u for _, u in at6[:3]] == [(1, 0), (0, 0), (0, 1)]
    assert at6[0][0] < 1e-12 and close(at6[1][0], (18 / 19) ** 2) and close(at6[2][0], (70 / 73) ** 2)
    assert all(close(m, 4.0) for m, _ in at1[3:])


def test_best_k_is_the_one_whose_top_n_scores_best_jointly():
    sel = select_heads_knn(DIFFER, ACTIONS, EPISODES, k_grid=(1, 6), n=2)
    assert close(sel.search_mse[1], 4.0) and close(sel.search_mse[6], 25 / 49)
    assert sel.best_k == 6 and sel.heads == [(1, 0), (0, 0)]  # k = 6's ranking order, P first


def test_the_final_set_is_rescored_at_every_k_and_best_k_is_kept():
    """{P, A1} at k = 1: the A1 partner (joint cos 2/3) is nearest and right, MSE 0 < 25/49; best k stays 6."""
    sel = select_heads_knn(DIFFER, ACTIONS, EPISODES, k_grid=(1, 6), n=2)
    assert sel.per_k_mse[1] == 0.0 and close(sel.per_k_mse[6], 25 / 49)
    assert sel.cv_mse == sel.per_k_mse[6] and sel.best_k == 6


def test_released_and_robosteers_earlier_selection_differ():
    """Ranked at its own best k, every one of A1, A2, P scores 0, so the earlier selection keeps A1 and A2."""
    flat, heads = flatten_tower(torch.tensor(DIFFER), "llm")
    scores = knn_scores(flat, ACTIONS, EPISODES, heads, config=KNNConfig(k_grid=(1, 6)), layout=LAYOUT)
    earlier = HeadMask.select(scores, k=2)
    released = select_heads_knn(DIFFER, ACTIONS, EPISODES, k_grid=(1, 6), n=2).to_mask(LAYOUT)
    assert earlier.heads == (Head("llm", 0, 0), Head("llm", 0, 1))
    assert released.heads == (Head("llm", 0, 0), Head("llm", 1, 0))


def test_ties_go_to_the_earlier_head_and_the_first_k_of_the_grid():
    """Two identical P heads (0,1) and (1,1) score exactly 0 at k = 3, 1, 2; the W heads score 4."""
    acts = units(W, P, W, P, W, W)
    one = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(3, 1, 2), n=1)
    assert one.heads == [(0, 1)] and one.search_mse == {3: 0.0, 1: 0.0, 2: 0.0}
    assert one.best_k == 3  # strict <: the first k given, not the smallest nor the last
    two = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(2, 1), n=2)
    assert two.heads == [(0, 1), (1, 1)] and two.best_k == 2 and two.cv_mse == 0.0


def test_best_add_takes_exactly_n_steps_on_raw_concatenated_features():
    """P, then W at scale 2 (big) or 1/2 (small), all with one pairing. Step 1: P (0). Step 2: P + big W puts the
    wrong decoy nearest (cos 4/5), P + small W keeps the same class nearest (cos 4/5): 0, so the small W (1,1)
    wins though it ranks after the big ones. Step 3: every big W gives P + 1/2 W + 2 W the decoy at cos 17/21:
    MSE 4 at k = 1; at k = 3 the decoy (w = 21/4) and two same-class frames (w = 21/17): pred -9/25, MSE (34/25)^2.
    The search adds the third head although the error rises from 0; robosteer's greedy_select stops after P."""
    acts = units(P, 2 * W, 2 * W, W / 2, 2 * W, 2 * W)
    sel = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1, 3), n=3, mode="best_add")
    assert sel.heads == [(0, 0), (1, 1), (0, 1)]
    assert sel.search_mse[1] == 4.0 and close(sel.search_mse[3], (34 / 25) ** 2) and sel.best_k == 3
    flat, heads = flatten_tower(torch.tensor(acts), "llm")
    earlier = greedy_select(flat, ACTIONS, EPISODES, heads, config=KNNConfig(k_grid=(1, 3)), max_heads=3)
    assert earlier.heads == (Head("llm", 0, 0),)


def test_excluded_heads_are_dropped_after_the_search_and_refilled_from_the_best_k_ranking():
    """Rankings: k = 1: A1, A2, P, Z (0), Q, W (4); k = 6: P (~0), Z (4/9), Q (0.818), A1, A2, W. The k = 6 top 2
    {P, Z} (joint: same class at cos 2/3, pred 1/2, MSE 1/4) beats k = 1's {A1, A2} (4). Excluding P leaves Z and
    refills with Q, the next of k = 6's ranking (k = 1's would give A1). {Z, Q} (|.|^2 = 13/3): same class at
    cos 6/13 (w = 13/7), decoy at 4/13 (w = 13/9): k = 1 -> 0, k = 6 -> pred (39/7 - 13/9 - 2) / (39/7 + 13/9 + 2)."""
    acts = units(A1, A2, P, Z, Q, W)
    plain = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1, 6), n=2)
    assert plain.heads == [(1, 0), (1, 1)] and plain.best_k == 6 and close(plain.cv_mse, 1 / 4)
    assert close(plain.rankings[6][2][0], (104 / 115) ** 2)
    sel = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1, 6), n=2, excluded=[(1, 0)])
    assert sel.heads == [(1, 1), (2, 0)] and sel.best_k == 6 and sel.search_mse == plain.search_mse
    pred = (Fraction(39, 7) - Fraction(13, 9) - 2) / (Fraction(39, 7) + Fraction(13, 9) + 2)
    assert sel.per_k_mse[1] == 0.0 and close(sel.per_k_mse[6], (1 - pred) ** 2) and sel.cv_mse == sel.per_k_mse[6]
    every = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1, 6), n=2, excluded=[(0, 0), (0, 1), (1, 0), (1, 1)])
    assert every.heads == [(2, 0), (2, 1)]  # min(n, units - excluded) = 2, all from the ranking


def test_layer_mode_scores_each_layer_s_concatenated_heads():
    """Layer 0 = [P, 10 W]: the decoy dominates (cos 100/101), MSE 4; layer 1 = [W, W]: 4; layer 2 = [10 P, W]:
    same class at cos 100/101, MSE 0. Per head, the first P (0,0) ties with (2,0) at 0 and wins by order."""
    acts = units(P, 10 * W, W, W, 10 * P, W)
    sel = select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1,), n=1, unit="layer")
    assert sel.heads == [2] and [u for _, u in sel.rankings[1]] == [2, 0, 1]
    assert [m for m, _ in sel.rankings[1]] == [0.0, 4.0, 4.0]
    assert sel.trainable_head_indices() == [[2, 0], [2, 1]]
    assert sel.to_mask(LAYOUT).heads == (Head("llm", 2, 0), Head("llm", 2, 1))
    assert select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1,), n=1).heads == [(0, 0)]
    assert select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(1,), n=1, unit="layer", excluded=[2]).heads == [0]


def test_one_episode_frames_without_neighbours_are_left_out_and_large_k_uses_what_there_is(caplog):
    """Frames 0..3, window 2: only 0 and 3 are more than 2 apart. Frame 0 predicts y3 = -1, frame 3 predicts
    y0 = +1: each error 4; frames 1 and 2 have no neighbour and are not averaged in (else the MSE would be 2)."""
    acts = np.random.default_rng(0).normal(size=(4, 3, 2, 2))
    y = np.array([[1.0], [0.0], [0.0], [-1.0]])
    with caplog.at_level(logging.WARNING):
        sel = select_heads_knn(acts, y, None, k_grid=(1, 40), window=2, n=2)
    assert sel.per_k_mse == {1: 4.0, 40: 4.0} and sel.protocol.startswith("leave-one-frame-out")
    assert "2 frames have no neighbour" in caplog.text and "exceeds the 1 neighbours" in caplog.text


def _reference_mse(x, y, ep, fr, k, window):
    """Leave-one-out kNN MSE of features x (N, P), one query at a time, as the released evaluation reads."""
    xn = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
    several = len(np.unique(ep)) > 1
    errors = []
    for i in range(len(x)):
        cand = np.flatnonzero(ep != ep[i] if several else np.abs(fr - fr[i]) > window)
        if len(cand):
            d = 1.0 - xn[cand] @ xn[i]
            near = np.argsort(d, kind="stable")[:k]
            w = 1.0 / (d[near] + 1e-8)
            errors.append(np.mean((w @ y[cand][near] / w.sum() - y[i]) ** 2))
    return float(np.mean(errors))


def _reference_select(acts, y, ep, fr, k_grid, n, mode, excluded, unit, window):
    n_frames, n_layers, n_heads, d = acts.shape
    x = acts.reshape(n_frames, n_layers, n_heads * d) if unit == "layer" else acts.reshape(n_frames, -1, d)
    names = list(range(n_layers)) if unit == "layer" else [(l, h) for l in range(n_layers) for h in range(n_heads)]

    def mse(chosen, k):
        return _reference_mse(x[:, chosen].reshape(n_frames, -1), y, ep, fr, k, window)

    ranking = {k: sorted(range(len(names)), key=lambda u: mse([u], k)) for k in k_grid}
    found = {}
    for k in k_grid:
        if mode == "topk":
            found[k] = (ranking[k][:n], mse(ranking[k][:n], k))
        else:
            chosen, last = [], None
            for _ in range(n):
                trials = [(mse(chosen + [u], k), u) for u in ranking[k] if u not in chosen]
                last, best = min(trials, key=lambda t: t[0])  # min keeps the first of equal errors
                chosen.append(best)
            found[k] = (chosen, last)
    best_k = min(k_grid, key=lambda k: found[k][1])
    drop = {names.index(e) for e in excluded}
    final = [u for u in found[best_k][0] if u not in drop]
    final += [u for u in ranking[best_k] if u not in drop and u not in final][: min(n, len(names) - len(drop)) - len(final)]
    return [names[u] for u in final], best_k, {k: mse(final, k) for k in k_grid}


CROSS = [  # (episodes, mode, unit, excluded)
    (4, "topk", "head", ()), (4, "best_add", "head", [(0, 1)]), (4, "topk", "layer", [1]),
    (1, "best_add", "head", ()), (1, "topk", "head", [(2, 1), (0, 0)]),
]


@pytest.mark.parametrize("n_episodes,mode,unit,excluded", CROSS)
def test_agrees_with_a_query_by_query_reference_on_random_data(n_episodes, mode, unit, excluded):
    g = np.random.default_rng(7)
    acts = g.normal(size=(24, 3, 2, 3)) * g.uniform(0.2, 3.0, size=(1, 3, 2, 1))  # unequal head norms
    y = g.normal(size=(24, 2))
    ep = np.repeat(np.arange(n_episodes), 24 // n_episodes)
    fr = np.arange(24) % (24 // n_episodes)
    grid, n = (2, 5, 9), 2 if unit == "layer" else 3
    sel = select_heads_knn(acts, y, ep, fr, k_grid=grid, n=n, mode=mode, excluded=excluded, unit=unit, window=4)
    heads, best_k, per_k = _reference_select(acts, y, ep, fr, grid, n, mode, excluded, unit, window=4)
    assert sel.heads == heads and sel.best_k == best_k
    # the release adds 1e-8 to the norms before dividing, robosteer does not: errors agree to ~1e-9
    assert all(close(sel.per_k_mse[k], per_k[k], 1e-7) for k in grid)


@pytest.mark.parametrize("kwargs,message", [
    ({"activations": np.zeros((8, 6, 20))}, r"activations must be \(N, layers, heads, d\)"),
    ({"actions": np.zeros((7, 1))}, r"actions must be \(N, A\) with N = 8"),
    ({"episode_ids": np.zeros(7)}, r"episode_ids must be \(N,\) = \(8,\)"),
    ({"frame_ids": np.zeros((8, 2))}, r"frame_ids must be \(N,\) = \(8,\)"),
    ({"mode": "greedy"}, r"mode must be one of 'topk', 'best_add'; got 'greedy'"),
    ({"unit": "tower"}, "unit must be one of"), ({"metric": "l1"}, "metric must be one of"),
    ({"n": 7}, r"n must be an int from 1 to the 6 heads"), ({"k_grid": (10, 10)}, "k_grid must be"),
    ({"k_grid": (0,)}, "k_grid must be"), ({"window": -1}, "window must be an int >= 0"),
    ({"excluded": [5]}, r"excluded must hold \(layer, head\) pairs"),
    ({"excluded": [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]}, "excluded leaves no head"),
    ({"activations": {"llm": np.zeros((8, 3, 2, 4))}, "unit": "layer"}, "unit='layer' takes one"),
    ({"activations": np.full((8, 3, 2, 4), np.nan)}, "activations contain NaN/inf in 8 frames"),
])
def test_bad_arguments_say_which_and_what_was_expected(kwargs, message):
    args = {"activations": DIFFER, "actions": ACTIONS, "episode_ids": EPISODES, "frame_ids": None, "n": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        select_heads_knn(args.pop("activations"), args.pop("actions"), args.pop("episode_ids"), args.pop("frame_ids"),
                         **args)


def test_euclidean_metric_and_tower_dict_input():
    """Euclidean on P: same class at distance 0, so k <= 3 gives 0; a {tower: acts} dict names heads by Head."""
    acts = units(W, W, P, W, W, W)
    assert select_heads_knn(acts, ACTIONS, EPISODES, k_grid=(3,), n=1, metric="euclidean").heads == [(1, 0)]
    sel = select_heads_knn({"llm": acts}, ACTIONS, EPISODES, k_grid=(3,), n=1, excluded=["llm.L0H0"])
    assert sel.heads == [Head("llm", 1, 0)] and sel.trainable_head_indices() == [[1, 0]]


def test_heads_json_round_trip(tmp_path):
    sel = select_heads_knn(DIFFER, ACTIONS, EPISODES, k_grid=(1, 6), n=2)
    path = write_heads_json(tmp_path / "heads.json", sel, source="acts.h5")
    data = json.loads(path.read_text())
    assert data["trainable_head_indices"] == [[1, 0], [0, 0]]  # selection order, as the release writes it
    assert (data["best_k"], data["cv_mse"], data["unit_mode"], data["target"], data["attn_h5"]) == \
        (6, sel.cv_mse, "head", 2, "acts.h5")
    assert data["per_k_mse"] == {"1": 0.0, "6": sel.per_k_mse[6]} and data["selection_mode"] == "topk"
    mask = read_heads_json(path, LAYOUT)
    assert mask.heads == sel.to_mask(LAYOUT).heads and "best_k=6" in mask.data
    again = read_heads_json(write_heads_json(tmp_path / "mask.json", mask), LAYOUT)
    assert again.heads == mask.heads and json.loads((tmp_path / "mask.json").read_text())["best_k"] is None
    layer = select_heads_knn(units(P, 10 * W, W, W, 10 * P, W), ACTIONS, EPISODES, k_grid=(1,), n=1, unit="layer")
    assert read_heads_json(write_heads_json(tmp_path / "layer.json", layer), LAYOUT).heads == \
        (Head("llm", 2, 0), Head("llm", 2, 1))


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "expected a JSON object"), ('{"best_k": 1}', "field 'trainable_head_indices' is missing"),
    ('{"trainable_head_indices": 3}', "must be a list"),
    ('{"trainable_head_indices": [[1, 0], [1]]}', r"'trainable_head_indices'\[1\] must be \[layer, head\] ints"),
    ('{"trainable_head_indices": [[3, 0]]}', r"\[0\] = \[3, 0\] is outside tower 'llm' \(3 layers x 2 heads\)"),
    ('{"trainable_head_indices": [[1, 0], [1, 0]]}', r"repeats heads \['llm.L1H0'\]"),
    ('{"trainable_head_indices": [], "best_k": "ten"}', "field 'best_k' must be a number or null"),
    ("{", "is not valid JSON"),
])
def test_heads_json_errors_name_the_file_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_heads_json(path, LAYOUT)
    assert "bad.json" in str(err.value)


def test_variance_scores():
    """Head 0 takes (1, 0) and (-1, 0): covariance trace 1, norms 1 and 1 (variance 0); head 1 takes (1, 0) and
    (3, 0): trace 1, norms 1 and 3 (variance 1)."""
    acts = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[-1.0, 0.0], [3.0, 0.0]]])  # (N=2, H=2, D=2)
    heads = [Head("llm", 0, 0), Head("llm", 0, 1)]
    total = variance_scores(acts, heads)
    assert total.values("total_variance").tolist() == [1.0, 1.0] and total.top(1) == [heads[0]]
    l2 = variance_scores(acts, heads, metric="l2_variance")
    assert l2.values("l2_variance").tolist() == [0.0, 1.0] and l2.top(1) == [heads[1]]
    with pytest.raises(ValueError, match="metric must be one of total_variance, l2_variance"):
        variance_scores(acts, heads, metric="std")


def test_cma_scores_are_the_rise_in_action_mse():
    """Actions 0, the policy predicts 0.1 (MSE 0.01); with head A replaced 0.1 again (+0), with B 1.0 (+0.99)."""
    actions = np.zeros((3, 2))
    a, b = Head("llm", 1, 0), Head("llm", 2, 1)
    scores = cma_scores(actions, np.full((3, 2), 0.1), {a: np.full((3, 2), 0.1), b: np.ones((3, 2))}, layout=LAYOUT)
    assert scores.top(None) == [b, a] and scores.meta["baseline_mse"] == pytest.approx(0.01)
    assert scores.values("cma") == pytest.approx([0.0, 0.99]) and scores.values("cma/mse") == pytest.approx([0.01, 1.0])
    with pytest.raises(ValueError, match="ablated predictions of llm.L1H0 have shape"):
        cma_scores(actions, actions, {a: np.zeros((2, 2))})
    assert baseline_means(np.arange(8.0).reshape(2, 1, 2, 2)).tolist() == [[[2.0, 3.0], [4.0, 5.0]]]


def test_discover_top_k_beyond_the_scored_heads_says_so(monkeypatch, caplog):
    import robosteer.circuits.discover as discover_module
    from robosteer.circuits.config import DiscoverConfig

    heads = tuple(LAYOUT.heads())
    scores = HeadScores(heads, {"random": np.arange(6.0)}, {"random": True}, layout=LAYOUT, method="random")
    monkeypatch.setattr(discover_module, "_score_heads", lambda *a, **k: (scores, "random", None))
    with caplog.at_level(logging.WARNING):
        result = discover_module.discover(SimpleNamespace(head_layout=LAYOUT), None,
                                          DiscoverConfig(method="random", top_k=1000))
    assert len(result.mask) == 6 and "threshold" not in caplog.text
    assert "--top-k 1000 asks for more heads than the 6 scored on towers llm; selecting all 6" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        HeadMask.select(scores, k=10)
    assert "asked for 10 heads but only 6 are scored" in caplog.text and "threshold" not in caplog.text
