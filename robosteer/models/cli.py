"""``robosteer info``: what a checkpoint holds (towers, heads, parameters, datasets)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a local OpenVLA-format checkpoint (or 'default')")
    p.add_argument("path", help="checkpoint folder, or 'default'")
    p.set_defaults(func=_info)


def _info(args) -> int:
    from .loading import build_vla_from_config, _as_config
    from .assets import default_checkpoint_dir

    path = default_checkpoint_dir() if args.path == "default" else args.path
    cfg = _as_config(path)
    vla = build_vla_from_config(cfg, device="meta")
    n_params = sum(p.numel() for p in vla.parameters())
    print(f"checkpoint: {path}")
    print(f"parameters: {n_params:,} ({cfg.torch_dtype})")
    for tower in cfg.towers:
        print(f"tower {tower.kind}: {tower.width}d x {tower.depth} blocks x {tower.heads} heads, "
              f"{tower.image_size}px / patch {tower.patch_size} -> {tower.n_patches} patches ({tower.timm_id})")
    kw = cfg.llama_kwargs()
    print(f"llm: {kw['hidden_size']}d x {kw['num_hidden_layers']} layers x {kw['num_attention_heads']} heads "
          f"({kw['num_key_value_heads']} kv), vocab {kw['vocab_size']}")
    print("head sites: " + ", ".join(f"{t}={n_l * n_h}" for t, n_l, n_h in vla.head_layout.towers))
    print(f"datasets (unnorm_key): {sorted(cfg.norm_stats) or 'none'}")
    return 0
