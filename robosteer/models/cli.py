"""``robosteer info``: what a checkpoint holds (towers, heads, parameters, datasets)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a local OpenVLA-format checkpoint (or 'default')")
    p.add_argument("path", help="checkpoint folder, or 'default'")
    p.set_defaults(func=_info)


def _info(args) -> int:
    from pathlib import Path

    from .assets import default_checkpoint_dir
    from .checkpoint_io import read_checkpoint_header, weight_files
    from .loading import build_vla_from_config, check_keys, _as_config
    from .saving import separate_modules

    path = Path(default_checkpoint_dir() if args.path == "default" else args.path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    cfg = _as_config(path)  # a file is read as a config.json (a pickle or other binary file is refused)
    vla = build_vla_from_config(cfg, device="meta")
    weights = "not checked (a config file: pass the checkpoint folder)"
    if path.is_dir():  # the weights' headers against the layout config.json describes: a truncated file fails here
        files = weight_files(path)
        header = read_checkpoint_header(files)
        separate = separate_modules(cfg)
        expected = {k: tuple(v.shape) for k, v in vla.state_dict().items() if k.split(".")[0] not in separate}
        check_keys(expected, {k: v[0] for k, v in header.items()}, where=str(path))
        weights = f"{len(header)} tensors in {len(files)} file(s), names and shapes match config.json"
    n_params = sum(p.numel() for p in vla.parameters())
    print(f"checkpoint: {path}")
    print(f"weights: {weights}")
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
