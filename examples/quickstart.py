"""A first look at robosteer: build a tiny OpenVLA-architecture policy, run it, save and reload it.

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

import robosteer
from robosteer.models.tiny import tiny_vla


def main() -> None:
    vla = tiny_vla(seed=0, image_size=64, patch_size=8, llm_layers=4, llm_heads=8, llm_dim=64)
    n_params = sum(p.numel() for p in vla.parameters())
    print(f"tiny OpenVLA: {n_params:,} parameters; heads per tower: {vla.head_layout.to_dict()}")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    instruction = "pick up the red cube"
    input_ids = vla.tokenize(instruction)
    with torch.no_grad():
        out = vla(input_ids=input_ids, pixel_values=vla.preprocess(image))
    print(f"forward: logits {tuple(out.logits.shape)} over BOS + {vla.config.n_patches} patches + {input_ids.shape[1] - 1} text tokens")
    action, tokens = vla.predict_action(image, instruction, return_tokens=True)
    print(f"predict_action({instruction!r}) -> tokens {tokens.tolist()}\n  action {np.round(action, 3).tolist()}")
    with tempfile.TemporaryDirectory() as tmp:
        vla.save_pretrained(f"{tmp}/policy")
        again = robosteer.load_vla(f"{tmp}/policy")
        same = np.array_equal(again.predict_action(image, instruction), action)
        print(f"saved and reloaded from {tmp}/policy: same action = {same}")


if __name__ == "__main__":
    main()
