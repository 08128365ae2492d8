"""The released Robotic Steering ``heads.json``: writing a selection or mask to it, reading it into a ``HeadMask``.

The release's selection stage (openpi_robotv ``head_tuning/select.py``) writes::

    {"trainable_head_indices": [[9, 7], [9, 4], ...], "best_k": 20, "cv_mse": 0.031,
     "unit_mode": "head", "target": 20, "attn_h5": "activations.h5"}

and its training config reads only ``trainable_head_indices`` ([layer, head] pairs of the
one LLM tower, in selection order; layer mode lists every head of each chosen layer).
``write_heads_json`` writes those six fields (``attn_h5`` is ``source``, or null) plus
robosteer's own extras, which the release ignores: ``selection_mode``, ``k_grid``,
``per_k_mse``, ``metric``, ``temp_excl_w``, ``excluded_heads`` for a ``KNNSelection``.
A ``HeadMask`` has no k or error, so those fields are null. ``read_heads_json`` reads
with ``json`` only, and its errors name the file and the field.

Usage::

    write_heads_json("heads.json", select_heads_knn(acts, actions, episodes, n=20))
    mask = read_heads_json("heads.json", vla.head_layout)   # -> HeadMask over the llm tower
"""

from __future__ import annotations

import math
from pathlib import Path

from robosteer.files import read_json, write_json_atomic
from robosteer.sites import Head, HeadLayout


def write_heads_json(path: str | Path, selection, *, tower: str | None = None, source: str | None = None) -> Path:
    """``write_heads_json("heads.json", selection_or_mask)``: the released file (atomically); returns the path.

    ``tower``: which tower's heads a ``HeadMask`` contributes (default: the one tower it has heads in).
    """
    from robosteer.circuits.released_selection import KNNSelection
    from robosteer.masks import HeadMask

    if isinstance(selection, KNNSelection):
        pairs = selection.trainable_head_indices()
        fields = {"best_k": selection.best_k, "cv_mse": _number(selection.cv_mse), "unit_mode": selection.unit,
                  "target": selection.n}
        extras = {"selection_mode": selection.mode, "k_grid": list(selection.per_k_mse),
                  "per_k_mse": {str(k): _number(v) for k, v in selection.per_k_mse.items()},
                  "metric": selection.metric, "temp_excl_w": selection.window,
                  "excluded_heads": [list(u) if isinstance(u, (tuple, list)) else str(u) if isinstance(u, Head) else u
                                     for u in selection.excluded]}
    elif isinstance(selection, HeadMask):
        towers = sorted({h.tower for h in selection.heads})
        if tower is None:
            if len(towers) > 1:
                raise ValueError(f"heads.json holds one tower's [layer, head] pairs; this mask has heads in {towers}: "
                                 "pass tower=...")
            tower = towers[0] if towers else "llm"
        selection.layout.shape(tower)  # raises for an unknown tower
        pairs = [[h.layer, h.head] for h in selection.heads if h.tower == tower]
        fields = {"best_k": None, "cv_mse": None, "unit_mode": "head", "target": len(pairs)}
        extras = {"selection_mode": selection.method or None}
    else:
        raise TypeError(f"write_heads_json takes a KNNSelection or a HeadMask, got {type(selection).__name__}")
    return write_json_atomic(path, {"trainable_head_indices": pairs, **fields, "attn_h5": source, **extras})


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def read_heads_json(path: str | Path, layout: HeadLayout, tower: str | None = None):
    """``read_heads_json("heads.json", vla.head_layout)`` -> ``HeadMask`` of the pairs, read in ``tower``.

    ``tower`` defaults to the layout's only tower, else ``"llm"``. Raises ``ValueError`` naming the
    file and field for a missing or malformed field, a head outside the layout, or a repeated head.
    """
    from robosteer.masks import HeadMask

    data = read_json(path, "heads.json")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'trainable_head_indices', got {type(data).__name__}")
    if tower is None:
        tower = layout.names[0] if len(layout.names) == 1 else "llm"
    if tower not in layout.names:
        raise ValueError(f"{path}: tower {tower!r} is not in the layout {layout.to_dict()}; pass tower=...")
    n_layers, n_heads = layout.shape(tower)
    if "trainable_head_indices" not in data:
        raise ValueError(f"{path}: field 'trainable_head_indices' is missing (fields: {sorted(data)})")
    raw = data["trainable_head_indices"]
    if not isinstance(raw, list):
        raise ValueError(f"{path}: field 'trainable_head_indices' must be a list of [layer, head], "
                         f"got {type(raw).__name__}")
    heads = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
            raise ValueError(f"{path}: field 'trainable_head_indices'[{i}] must be [layer, head] ints, got {pair!r}")
        layer, head = pair
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"{path}: field 'trainable_head_indices'[{i}] = {pair} is outside tower {tower!r} "
                             f"({n_layers} layers x {n_heads} heads)")
        heads.append(Head(tower, layer, head))
    if len(set(heads)) != len(heads):
        repeated = sorted({str(h) for h in heads if heads.count(h) > 1})
        raise ValueError(f"{path}: field 'trainable_head_indices' repeats heads {repeated[:5]}")
    for name, kind in (("best_k", int), ("cv_mse", (int, float))):
        value = data.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{path}: field {name!r} must be a number or null, got {value!r}")
    note = ", ".join(f"{name}={data[name]}" for name in ("unit_mode", "best_k", "cv_mse") if data.get(name) is not None)
    mode = data.get("selection_mode")
    method = {None: "knn", "topk": "knn", "best_add": "knn-best_add"}.get(mode, str(mode))
    return HeadMask.from_heads(heads, layout, method=method,
                               data=f"released heads.json {Path(path).name}" + (f" ({note})" if note else ""))
