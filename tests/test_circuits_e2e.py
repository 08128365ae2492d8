"""End to end on the tiny real-architecture model: cache -> kNN scores -> mask file -> head-map."""

from __future__ import annotations

import numpy as np
import torch

from robosteer.circuits import KNNConfig, from_cache, knn_scores
from robosteer.masks import HeadMask


def test_tiny_vla_cache_to_scores_to_mask(tiny_vla, tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 24
    ids = tiny_vla.tokenize("pick up the cube").reshape(1, -1).expand(n, -1)
    pixels = torch.randn(n, 6, 28, 28, generator=g)
    _, cache = tiny_vla.run_with_cache(input_ids=ids, pixel_values=pixels, names_filter=lambda name: name.endswith("hook_z"))
    acts = from_cache(cache, tiny_vla.head_layout, position=-1)
    layout = tiny_vla.head_layout
    assert acts["llm"].shape[:3] == (n, *layout.shape("llm"))
    # The vision towers' last block never runs, so its heads are not in the cache.
    assert acts["dino"].shape[1] == layout.shape("dino")[0] - 1

    scores = knn_scores(acts, torch.randn(n, 7, generator=g), torch.arange(n) // 4, layout=layout,
                        fingerprint=tiny_vla.fingerprint(), config=KNNConfig(k_grid=(3, 5)))
    assert np.isnan(scores.grid("dino")[-1]).all() and not np.isnan(scores.grid("dino")[:-1]).any()
    assert not np.isnan(scores.grid("llm")).any()

    mask = HeadMask.select(scores, k=2, per_tower=True)
    loaded = HeadMask.load_safetensors(mask.save_safetensors(tmp_path / "heads.safetensors"), layout=layout)
    assert loaded == mask and loaded.fingerprint == tiny_vla.fingerprint()
    assert loaded.counts() == {tower: 2 for tower in layout.names}
