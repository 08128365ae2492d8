"""The OpenVLA (Prismatic) family: Llama LLM + DINOv2 / SigLIP towers.

Usage::

    towers = FAMILY.tower_modules(vla)  # {"llm": TowerModules, "dino": ..., "siglip": ...}
    # the same through the model: vla.family is FAMILY, vla.tower_modules(), vla.unused_modules()
"""

from __future__ import annotations

from .base import Family, TowerModules


def tower_modules(vla) -> dict[str, TowerModules]:
    kw = vla.config.llama_kwargs()
    llm_heads, llm_kv = kw["num_attention_heads"], kw["num_key_value_heads"]
    towers = {
        "llm": TowerModules(
            name="llm", path="language_model.model.layers", blocks=vla.language_model.model.layers,
            attn="self_attn", out="o_proj", q="q_proj", k="k_proj", v="v_proj",
            n_heads=llm_heads, n_kv_heads=llm_kv, head_dim=kw.get("head_dim") or kw["hidden_size"] // llm_heads,
            d_model=kw["hidden_size"],
        )
    }
    paths = ("vision_backbone.featurizer.blocks", "vision_backbone.fused_featurizer.blocks")
    for tower, cfg, path in zip(vla.vision_backbone.towers(), vla.config.towers, paths):
        towers[cfg.kind] = TowerModules(
            name=cfg.kind, path=path, blocks=tower.blocks, attn="attn", out="proj", qkv="qkv",
            n_heads=cfg.heads, n_kv_heads=cfg.heads, head_dim=cfg.head_dim, d_model=cfg.width,
            n_active_layers=cfg.feature_layer + 1,
        )
    return towers


def unused_modules(vla) -> list[str]:
    """Module paths whose weights load but never change an output (OpenVLA's feature is the
    second-to-last block's output: each tower's last block and final norm, and SigLIP's MAP head)."""
    out = []
    prefixes = ("vision_backbone.featurizer", "vision_backbone.fused_featurizer")
    for prefix, tower, cfg in zip(prefixes, vla.vision_backbone.towers(), vla.config.towers):
        out += [f"{prefix}.blocks.{layer}" for layer in range(cfg.feature_layer + 1, cfg.depth)]
        out.append(f"{prefix}.norm")
        if hasattr(tower, "attn_pool"):
            out.append(f"{prefix}.attn_pool")
    return out


def output_modules(vla) -> list:
    """The output embedding (the Llama's ``lm_head``), which LoRA's "all-linear" leaves out."""
    return [vla.language_model.get_output_embeddings()]


FAMILY = Family(name="openvla", tower_modules=tower_modules, unused_modules=unused_modules,
                output_modules=output_modules)
