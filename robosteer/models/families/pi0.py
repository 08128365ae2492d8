"""The pi0 family (lerobot's PyTorch pi0): PaliGemma's Gemma VLM, the Gemma action expert, SigLIP.

Towers, in model order: ``llm`` (the VLM over the prefix), ``expert`` (the action expert over
``[state | action tokens]``), ``siglip`` (the vision tower, once per camera). The real pi0 has
18 x 8 + 18 x 8 + 27 x 16 = 144 + 144 + 432 heads. Every Gemma layer has one key/value head shared
by its 8 query heads, so a head's own weights are its query rows and its ``o_proj`` columns.

Usage::

    towers = FAMILY.tower_modules(pi0)  # {"llm": TowerModules, "expert": ..., "siglip": ...}
"""

from __future__ import annotations

from .base import Family, TowerModules

VLM = "model.paligemma_with_expert.paligemma.model.language_model"
EXPERT = "model.paligemma_with_expert.gemma_expert.model"
SIGLIP = "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model"


def tower_modules(pi0) -> dict[str, TowerModules]:
    cfg = pi0.config
    towers = {}
    for name, path, stack, dims in (("llm", VLM, pi0.vlm, cfg.vlm), ("expert", EXPERT, pi0.expert, cfg.expert)):
        towers[name] = TowerModules(
            name=name, path=f"{path}.layers", blocks=stack.layers, attn="self_attn", out="o_proj",
            q="q_proj", k="k_proj", v="v_proj", n_heads=dims.n_heads, n_kv_heads=dims.n_kv_heads,
            head_dim=dims.head_dim, d_model=dims.width,
            # the VLM's last layer runs for its K/V (the expert reads them), but its heads' outputs feed nothing
            n_head_layers=dims.depth - 1 if name == "llm" else None,
        )
    vision = cfg.vision
    towers["siglip"] = TowerModules(
        name="siglip", path=f"{SIGLIP}.encoder.layers", blocks=pi0.vision.encoder.layers, attn="self_attn",
        out="out_proj", q="q_proj", k="k_proj", v="v_proj", n_heads=vision.n_heads, n_kv_heads=vision.n_heads,
        head_dim=vision.head_dim, d_model=vision.width,
    )
    return towers


def unused_modules(pi0) -> list[str]:
    """Weights that never change an action: both ``lm_head``s, and in the VLM's last layer everything
    after its K/V (the expert reads only the prefix K/V, so that layer's queries, ``o_proj``, MLP and the
    final norm feed nothing)."""
    last = f"{VLM}.layers.{pi0.config.vlm.depth - 1}"
    return ["model.paligemma_with_expert.paligemma.lm_head", "model.paligemma_with_expert.gemma_expert.lm_head",
            f"{last}.self_attn.q_proj", f"{last}.self_attn.o_proj", f"{last}.post_attention_layernorm",
            f"{last}.mlp", f"{VLM}.norm"]


def output_modules(pi0) -> list:
    """The two (unused) output embeddings, which LoRA's "all-linear" leaves out."""
    net = pi0.model.paligemma_with_expert
    return [net.paligemma.lm_head, net.gemma_expert.lm_head]


FAMILY = Family(name="pi0", tower_modules=tower_modules, unused_modules=unused_modules, output_modules=output_modules)
