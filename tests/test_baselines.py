"""The SAV baseline and the random control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robosteer.circuits.random_baseline import random_scores
from robosteer.circuits.sav import discretize_actions, sav_scores
from robosteer.sites import Head, HeadLayout

LAYOUT = HeadLayout({"llm": (2, 3), "dino": (1, 2)})


def test_sav_picks_the_class_separating_head():
    g = torch.Generator().manual_seed(0)
    n_classes, per_class, d = 4, 6, 10
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    acts = torch.randn(len(labels), 6, d, generator=g)  # (N, H, D) for the llm tower
    centres = 3 * torch.randn(n_classes, d, generator=g)
    planted = Head("llm", 1, 1)
    heads = LAYOUT.heads("llm")
    acts[:, heads.index(planted)] += centres[labels]
    s = sav_scores(acts, labels.numpy(), heads, layout=LAYOUT)
    assert s.top(1) == [planted]
    accuracy = dict(zip(s.heads, s.values("sav")))
    assert accuracy[planted] == 1.0
    assert max(v for h, v in accuracy.items() if h != planted) < 0.6
    assert s.meta["n_classes"] == 4 and s.meta["chance"] == 0.25


def test_sav_leave_one_out_is_not_fooled_by_a_single_memorised_example():
    # Each example is its own direction; with its own sample in its class mean it would be classified
    # correctly. Leaving it out makes such a head no better than chance.
    g = torch.Generator().manual_seed(1)
    labels = np.repeat([0, 1], 8)
    acts = torch.randn(16, 1, 64, generator=g)
    s = sav_scores(acts, labels, [Head("llm", 0, 0)])
    assert s.values("sav")[0] < 0.8


def test_sav_dict_input_and_errors():
    g = torch.Generator().manual_seed(2)
    acts = {"llm": torch.randn(8, 2, 3, 4, generator=g), "dino": torch.randn(8, 1, 2, 6, generator=g)}
    s = sav_scores(acts, [0, 1] * 4, layout=LAYOUT, probe="task")
    assert s.column_names == ["sav:task"] and len(s) == 8
    with pytest.raises(ValueError, match="2 examples per class"):
        sav_scores(acts, [0] * 7 + [1], layout=LAYOUT)
    with pytest.raises(ValueError, match="at least 2 classes"):
        sav_scores(acts, [0] * 8, layout=LAYOUT)


def test_discretize_actions():
    actions = np.array([[-1.0, 0.0], [1.0, 0.0], [-1.0, 5.0], [1.0, 5.0], [-1.0, 0.0]])
    classes = discretize_actions(actions, n_bins=2)
    assert classes.tolist() == [0, 2, 1, 3, 0]


def test_random_scores_are_seeded():
    a, b, c = random_scores(LAYOUT, 7), random_scores(LAYOUT, 7), random_scores(LAYOUT, 8)
    assert a == b and a != c
    assert len(a) == len(LAYOUT) and a.meta["seed"] == 7
    assert random_scores(LAYOUT, 0, towers=["dino"]).heads == tuple(LAYOUT.heads("dino"))
