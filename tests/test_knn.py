"""kNN head scores and greedy selection on synthetic activations with planted heads."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robosteer.circuits.activations import flatten_tower, unit_rows
from robosteer.circuits.greedy import greedy_select
from robosteer.circuits.knn import KNNConfig, knn_scores
from robosteer.circuits.knn_reference import knn_scores_loop, knn_scores_released_style
from robosteer.sites import Head, HeadLayout

LAYOUT = HeadLayout({"llm": (3, 4)})
HEADS = LAYOUT.heads()
PLANTED = Head("llm", 1, 2)


def planted_data(n_frames=200, n_episodes=10, noise=0.1, seed=0):
    """Actions (N, 3); head llm.L1H2 carries them (plus noise), every other head is pure noise."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(n_frames, 3, generator=g)
    acts = torch.randn(n_frames, len(HEADS), 8, generator=g)  # (N, H, D)
    p = HEADS.index(PLANTED)
    acts[:, p, :] = 0.3 * torch.randn(n_frames, 8, generator=g)
    acts[:, p, :3] += actions + noise * torch.randn(n_frames, 3, generator=g)
    episodes = torch.arange(n_frames) // (n_frames // n_episodes)
    return acts, actions, episodes


@pytest.mark.parametrize("episodes_mode", ["multi", "single"])
def test_planted_head_ranks_first(episodes_mode):
    acts, actions, episodes = planted_data()
    eps = episodes if episodes_mode == "multi" else None
    scores = knn_scores(acts, actions, eps, HEADS, layout=LAYOUT)
    assert scores.top(1) == [PLANTED]
    skill = dict(zip(scores.heads, scores.values("knn")))
    assert skill[PLANTED] > 0.5
    assert max(v for h, v in skill.items() if h != PLANTED) < 0.2
    expected = "leave-one-episode-out" if episodes_mode == "multi" else "leave-one-frame-out (±30 frames excluded)"
    assert scores.meta["protocol"] == expected
    assert scores["llm.L1H2"]["knn/k"] in (10, 20, 30, 40)


CASES = [  # (episodes, k_grid, dtype, max_chunk_bytes): chunking down to one head per chunk
    ("multi", (3, 7, 15), "float32", 1),
    ("multi", (1, 10, 40), "float64", 200_000),
    ("single", (2, 5, 11), "float32", 300_000),
    ("single", (4, 30), "float64", 1),
]


@pytest.mark.parametrize("mode,k_grid,dtype,budget", CASES)
def test_vectorised_equals_reference_loop(mode, k_grid, dtype, budget):
    g = torch.Generator().manual_seed(1)
    n = 90
    acts = torch.randn(n, len(HEADS), 6, generator=g)
    actions = torch.randn(n, 4, generator=g)
    episodes = torch.arange(n) % 6 if mode == "multi" else None
    config = KNNConfig(k_grid=k_grid, dtype=dtype, max_chunk_bytes=budget, window=5)
    fast = knn_scores(acts, actions, episodes, HEADS, config=config)
    slow = knn_scores_loop(acts, actions, episodes, HEADS, config=config)
    assert fast.heads == slow.heads
    for column in ("knn", "knn/mse", "knn/k"):
        np.testing.assert_allclose(fast.values(column), slow.values(column), rtol=0, atol=1e-6)
    assert fast.meta == slow.meta
    assert np.ptp(fast.values("knn/mse")) > 1e-3  # the heads differ, so agreement is not trivial
    # The released code's style (one regressor per head, fold and k) computes the same numbers.
    released = knn_scores_released_style(acts, actions, episodes, HEADS, config=config)
    for column in ("knn", "knn/mse", "knn/k"):
        np.testing.assert_allclose(released.values(column), slow.values(column), rtol=0, atol=1e-9)


def test_dict_input_with_towers_of_different_width_matches_per_tower():
    g = torch.Generator().manual_seed(2)
    n = 60
    actions = torch.randn(n, 2, generator=g)
    episodes = torch.arange(n) // 10
    acts = {"llm": torch.randn(n, 2, 3, 8, generator=g), "dino": torch.randn(n, 1, 2, 5, generator=g)}
    layout = HeadLayout({"llm": (2, 3), "dino": (1, 2)})
    config = KNNConfig(k_grid=(5, 10))
    both = knn_scores(acts, actions, episodes, layout=layout, config=config)
    assert [str(h) for h in both.heads][:2] == ["llm.L0H0", "llm.L0H1"] and len(both) == 8
    for tower in ("llm", "dino"):
        flat, heads = flatten_tower(acts[tower], tower)
        alone = knn_scores(flat, actions, episodes, heads, config=config)
        rows = [both.heads.index(h) for h in heads]
        np.testing.assert_array_equal(both.values("knn/mse")[rows], alone.values("knn/mse"))


def duplicated_frames(n_pairs=60, seed=3):
    """Frames come in identical pairs (same activation, same action) two frames apart, else random."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n_pairs, 1, 16, generator=g).repeat_interleave(2, dim=0)  # (2P, 1, D)
    actions = torch.randn(n_pairs, 2, generator=g).repeat_interleave(2, dim=0)
    return acts, actions


def test_leave_one_episode_out_excludes_the_same_episode():
    acts, actions = duplicated_frames()
    heads = [Head("llm", 0, 0)]
    config = KNNConfig(k_grid=(1, 5))
    pairs_together = torch.arange(len(actions)) // 2 % 10  # each duplicate pair inside one episode
    held_out = knn_scores(acts, actions, pairs_together, heads, config=config)
    assert held_out.values("knn/mse")[0] > 0.5 * held_out.meta["mean_predictor_mse"]
    # The same frames with the twins in different episodes: the twin is found, error ~ 0.
    pairs_split = torch.arange(len(actions)) % 2
    leaked = knn_scores(acts, actions, pairs_split, heads, config=config)
    assert leaked.values("knn/mse")[0] < 1e-10


def test_single_episode_window_excludes_near_frames():
    acts, actions = duplicated_frames()
    heads = [Head("llm", 0, 0)]
    windowed = knn_scores(acts, actions, None, heads, config=KNNConfig(k_grid=(1, 3), window=2))
    assert windowed.values("knn/mse")[0] > 0.5 * windowed.meta["mean_predictor_mse"]
    no_window = knn_scores(acts, actions, None, heads, config=KNNConfig(k_grid=(1, 3), window=0))
    assert no_window.values("knn/mse")[0] < 1e-10


def test_k_larger_than_available_neighbours_warns_and_clips(caplog):
    g = torch.Generator().manual_seed(4)
    acts, actions = torch.randn(12, 2, 4, generator=g), torch.randn(12, 1, generator=g)
    episodes = torch.arange(12) // 4  # 8 neighbours per frame
    config = KNNConfig(k_grid=(5, 40))
    with caplog.at_level(logging.WARNING):
        fast = knn_scores(acts, actions, episodes, HEADS[:2], config=config)
    assert "exceeds the 8 neighbours" in caplog.text
    slow = knn_scores_loop(acts, actions, episodes, HEADS[:2], config=config)
    np.testing.assert_allclose(fast.values("knn/mse"), slow.values("knn/mse"), atol=1e-6)


@pytest.mark.parametrize("make_bad,match", [
    (lambda a, y, e: (a[:, :2], y, e, HEADS), r"acts shape \(30, 2, 4\) has 2 heads but 12 heads"),
    (lambda a, y, e: (a, y[:20], e, HEADS), r"N = 30 .* got shape \(20, 2\)"),
    (lambda a, y, e: (a, y, e[:5], HEADS), r"episodes must be \(N,\) with N = 30 .* got shape \(5,\)"),
    (lambda a, y, e: (a[0], y, e, HEADS), r"acts must be \(N, heads, d_head\), got shape \(12, 4\)"),
    (lambda a, y, e: (a.index_put((torch.tensor(3), torch.tensor(5)), torch.tensor(float("nan"))), y, e, HEADS),
     r"NaN/inf for 1 heads, e.g. \['llm.L1H1'\]"),
    (lambda a, y, e: (a, y, torch.zeros(30, dtype=torch.long), HEADS), r"no allowed neighbour"),  # window 30 > N
])
def test_bad_inputs_raise_clear_errors(make_bad, match):
    g = torch.Generator().manual_seed(5)
    acts, actions, episodes = torch.randn(30, 12, 4, generator=g), torch.randn(30, 2, generator=g), torch.arange(30) // 10
    with pytest.raises(ValueError, match=match):
        knn_scores(*make_bad(acts, actions, episodes))


@pytest.mark.parametrize("kwargs", [{"k_grid": ()}, {"k_grid": (0, 3)}, {"k_grid": (3, 3)}, {"window": -1},
                                    {"eps": 0.0}, {"dtype": "float16"}])
def test_config_validates(kwargs):
    with pytest.raises(ValueError):
        KNNConfig(**kwargs)


def two_part_data(n=240, seed=6):
    """Action (a, b): head A carries a, head B carries b, head C is a noisier copy of A, the rest noise.

    Cosine distance sees only directions, so a value is carried as an angle in the first two dims.
    """
    g = torch.Generator().manual_seed(seed)
    actions = 2 * torch.rand(n, 2, generator=g) - 1
    acts = 0.1 * torch.randn(n, len(HEADS), 6, generator=g)
    planted = ((Head("llm", 0, 1), 0, 0.0), (Head("llm", 2, 3), 1, 0.0), (Head("llm", 1, 0), 0, 0.3))
    for head, dim, noise in planted:
        angle = 1.5 * actions[:, dim] + noise * torch.randn(n, generator=g)
        acts[:, HEADS.index(head), 0] += torch.cos(angle)
        acts[:, HEADS.index(head), 1] += torch.sin(angle)
    others = [i for i, h in enumerate(HEADS) if h not in {p[0] for p in planted}]
    acts[:, others] += torch.randn(n, len(others), 6, generator=g)
    return acts, actions, torch.arange(n) // 24


def test_greedy_picks_the_two_heads_that_are_needed_together():
    acts, actions, episodes = two_part_data()
    config = KNNConfig(k_grid=(5, 10, 20))
    single = knn_scores(acts, actions, episodes, HEADS, config=config)
    assert single.values("knn").max() < 0.7  # no single head explains the action
    sel = greedy_select(acts, actions, episodes, HEADS, config=config, max_heads=5, min_improvement=1e-3)
    assert set(sel.heads) == {Head("llm", 0, 1), Head("llm", 2, 3)}
    assert sel.mse[1] < 0.5 * sel.mse[0] < sel.baseline_mse
    # The joint error equals kNN on the concatenated unit-normalised activations of the chosen heads.
    idx = [HEADS.index(h) for h in sel.heads]
    joint = unit_rows(acts[:, idx, :]).reshape(len(acts), 1, -1)
    direct = knn_scores(joint, actions, episodes, [Head("llm", 0, 0)], config=config)
    assert direct.values("knn/mse")[0] == pytest.approx(sel.mse[-1], abs=1e-6)


def test_greedy_candidate_pool_and_mask():
    acts, actions, episodes = two_part_data()
    sel = greedy_select(acts, actions, episodes, HEADS, config=KNNConfig(k_grid=(5, 10)), max_heads=1, candidates=3)
    assert len(sel.candidates) == 3 and len(sel.heads) == 1 and sel.heads[0] in sel.candidates
    mask = sel.to_mask(LAYOUT)
    assert mask.heads == sel.heads and mask.method == "knn-greedy"


def test_from_cache_picks_hook_z_at_positions():
    from robosteer.circuits.activations import from_cache

    layout = HeadLayout({"llm": (2, 3), "dino": (1, 2)})
    g = torch.Generator().manual_seed(7)
    cache = {f"llm.blocks.{l}.attn.hook_z": torch.randn(4, 5, 3, 8, generator=g) for l in range(2)}
    out = from_cache(cache, layout, position=torch.tensor([4, 3, 2, 1]))
    assert list(out) == ["llm"] and out["llm"].shape == (4, 2, 3, 8)
    assert torch.equal(out["llm"][1, 1], cache["llm.blocks.1.attn.hook_z"][1, 3])
    assert torch.equal(from_cache(cache, layout)["llm"][0, 0], cache["llm.blocks.0.attn.hook_z"][0, -1])
    with pytest.raises(KeyError, match="dino"):
        from_cache(cache, layout, towers=["dino"])
