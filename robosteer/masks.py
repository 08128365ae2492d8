"""Head masks: which heads to finetune (or patch, or plot), over a model's ``HeadLayout``.

A ``HeadMask`` is a set of heads tied to one layout. It is made from scores
(``HeadMask.select(scores, k=20)``), from a list (``HeadMask.from_heads``) or from
boolean tensors; it gives one (layers, heads) bool tensor per tower for the training
code, and saves to two open formats that load back equal:

- JSON (``to_json``/``from_json``): ``{"format": "robosteer.head_mask", "version": 1,
  "layout": {"llm": [32, 32]}, "heads": ["llm.L12H7", ...], "scores": [...],
  "column", "method", "data", "fingerprint"}`` — readable, diffable;
- safetensors (``save_safetensors``/``load_safetensors``): one bool tensor
  ``(layers, heads)`` per tower, with the same fields as string metadata.

Loading a mask made for another layout is an error naming both layouts. Writes are
atomic. ``HeadMask.random_like(mask, seed)`` is the control: as many heads per tower,
drawn at random.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from robosteer.files import FileFormatError, atomic_write_bytes, read_json, write_json_atomic
from robosteer.sites import Head, HeadLayout

log = logging.getLogger(__name__)

FORMAT = "robosteer.head_mask"
FORMAT_VERSION = 1


def _check_layout(found: HeadLayout, expected: HeadLayout | None, source: str) -> None:
    if expected is not None and found != expected:
        raise ValueError(f"{source} was made for layout {found.to_dict()}, but this model has layout "
                         f"{expected.to_dict()}; a head mask only fits the architecture it was made for")


def _read_layout(value, source: str) -> HeadLayout:
    """A file's ``layout`` field, ``{"llm": [layers, heads], ...}``, as a ``HeadLayout``."""
    if not isinstance(value, dict) or not value or not all(
            isinstance(dims, list) and len(dims) == 2 and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
            for dims in value.values()):
        raise FileFormatError(source, "layout", f'expected an object {{tower: [layers, heads]}} like {{"llm": [32, 32]}}, '
                              f"got {value!r:.80}")
    try:
        return HeadLayout(value)
    except ValueError as err:
        raise FileFormatError(source, "layout", str(err)) from None


@dataclass(frozen=True)
class HeadMask:
    """A set of heads over a layout: ``HeadMask.select(scores, k=20)``; ``mask.tensor("llm")`` -> (L, H) bool."""

    layout: HeadLayout  # the model's towers; every head must exist in it
    heads: tuple[Head, ...]  # chosen heads in layout order (tower, layer, head)
    scores: tuple[float, ...] | None = None  # the score of each chosen head (same order), if known
    column: str | None = None  # which score column chose them, e.g. "knn"
    method: str = ""  # how they were chosen, e.g. "knn", "knn-greedy", "random"
    data: str = ""  # free-text description of the data behind the choice
    fingerprint: str | None = None  # the model's ``vla.fingerprint()``, if known

    def __post_init__(self) -> None:
        given = [Head.parse(h) for h in self.heads]
        for head in given:
            self.layout.validate(head)
        if len(set(given)) != len(given):
            raise ValueError("a head mask names a head twice")
        order = sorted(range(len(given)), key=lambda i: (self.layout.names.index(given[i].tower),
                                                         given[i].layer, given[i].head))
        object.__setattr__(self, "heads", tuple(given[i] for i in order))
        if self.scores is not None:
            if len(self.scores) != len(given):
                raise ValueError(f"{len(self.scores)} scores for {len(given)} heads")
            object.__setattr__(self, "scores", tuple(float(self.scores[i]) for i in order))

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_heads(cls, heads: Iterable[Head | str], layout: HeadLayout, *, scores: Sequence[float] | None = None,
                   **fields) -> "HeadMask":
        """``HeadMask.from_heads(["llm.L3H1", "llm.L7H0"], layout)``."""
        return cls(layout, tuple(Head.parse(h) for h in heads), None if scores is None else tuple(scores), **fields)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], layout: HeadLayout, **fields) -> "HeadMask":
        """``HeadMask.from_tensors({"llm": bool (L, H)}, layout)``; every tower of the layout must be given."""
        if set(tensors) != set(layout.names):
            raise ValueError(f"mask tensors name towers {sorted(tensors)}, layout has {list(layout.names)}")
        heads = []
        for tower in layout.names:
            t = torch.as_tensor(tensors[tower])
            if tuple(t.shape) != layout.shape(tower):
                raise ValueError(f"mask tensor of tower {tower!r} has shape {tuple(t.shape)}, layout says "
                                 f"{layout.shape(tower)}")
            heads.extend(Head(tower, int(l), int(h)) for l, h in torch.nonzero(t.bool()).tolist())
        return cls(layout, tuple(heads), **fields)

    @classmethod
    def select(cls, scores, k: int | None = None, column: str | None = None, towers: Sequence[str] | None = None,
               per_tower: bool = False, threshold: float | None = None, layout: HeadLayout | None = None) -> "HeadMask":
        """``HeadMask.select(scores, k=20)``: the k most important heads (globally, or per tower).

        ``towers`` restricts the choice; ``threshold`` keeps only heads at least that good
        (score >= threshold, or <= for lower-is-better columns), and with ``k`` the top k
        of those. ``layout`` defaults to the scores' layout. On ``knn_scores`` this ranks each
        head at its own best k (robosteer's variant, ``discover --method knn-robosteer``); the
        released selection needs the activations: ``select_heads_knn(...).to_mask(layout)``.
        """
        layout = layout or scores.layout
        if layout is None:
            raise ValueError("these scores carry no layout; pass layout=vla.head_layout")
        if k is None and threshold is None:
            raise ValueError("select needs k, threshold, or both")
        if k is not None and (not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1):
            raise ValueError(f"select: k must be an integer >= 1 (how many heads to keep), got {k!r}; an empty "
                             "mask trains nothing (for every head that passes a threshold, pass threshold= alone)")
        column = scores.default_column if column is None else column
        wanted = list(layout.names) if towers is None else list(towers)
        for tower in wanted:
            layout.shape(tower)  # raises for an unknown tower
        ranked = scores.top(None, column)
        values = dict(zip(scores.heads, scores.values(column)))
        if threshold is not None:
            sign = 1.0 if scores.higher_is_better[column] else -1.0
            ranked = [h for h in ranked if sign * values[h] >= sign * threshold]
        ranked = [h for h in ranked if h.tower in wanted]
        if per_tower:
            chosen = [h for tower in wanted for h in [r for r in ranked if r.tower == tower][:k]]
        else:
            chosen = ranked[:k]
        if k is not None and len(chosen) < (k * len(wanted) if per_tower else k):
            log.warning("asked for %s heads%s but only %d are scored%s", k, " per tower" if per_tower else "",
                        len(chosen), "" if threshold is None else f" and pass the threshold {threshold}")
        return cls(layout, tuple(chosen), tuple(values[h] for h in chosen), column=column, method=scores.method,
                   data=scores.data, fingerprint=scores.fingerprint)

    @classmethod
    def random_like(cls, mask: "HeadMask", seed: int, among: Iterable[Head] | None = None) -> "HeadMask":
        """``HeadMask.random_like(mask, seed=0)``: as many heads per tower as ``mask``, uniformly at random
        (``among``: only from these heads, e.g. ``interventions.active_heads(vla)``; the draw is the one without
        it when ``among`` leaves out no head of the towers the mask draws from)."""
        rng = np.random.default_rng(seed)
        allowed = None if among is None else {Head.parse(h) for h in among}
        heads = []
        for tower in mask.layout.names:
            count = sum(h.tower == tower for h in mask.heads)
            pool = [h for h in mask.layout.heads(tower) if allowed is None or h in allowed]
            if count > len(pool):
                raise ValueError(f"cannot draw {count} random heads of tower {tower!r}: only {len(pool)} are allowed")
            heads.extend(pool[i] for i in rng.choice(len(pool), size=count, replace=False))
        return cls(mask.layout, tuple(heads), method="random", data=f"random_like({mask.method or 'mask'}, seed={seed})",
                   fingerprint=mask.fingerprint)

    # ----------------------------------------------------------------- set behaviour
    def __len__(self) -> int:
        return len(self.heads)

    def __iter__(self):
        return iter(self.heads)

    def __contains__(self, head: object) -> bool:
        return isinstance(head, (Head, str)) and Head.parse(head) in set(self.heads)

    def _combine(self, other: "HeadMask", keep) -> "HeadMask":
        if not isinstance(other, HeadMask):
            return NotImplemented
        _check_layout(other.layout, self.layout, "the other mask")
        mine, theirs = set(self.heads), set(other.heads)
        heads = [h for h in self.layout.heads() if keep(h in mine, h in theirs)]
        prints = {m.fingerprint for m in (self, other) if m.fingerprint is not None}
        return HeadMask(self.layout, tuple(heads), method="set-op",
                        fingerprint=prints.pop() if len(prints) == 1 else None)

    def __or__(self, other: "HeadMask") -> "HeadMask":
        return self._combine(other, lambda a, b: a or b)

    def __and__(self, other: "HeadMask") -> "HeadMask":
        return self._combine(other, lambda a, b: a and b)

    def __sub__(self, other: "HeadMask") -> "HeadMask":
        return self._combine(other, lambda a, b: a and not b)

    def counts(self) -> dict[str, int]:
        """Chosen heads per tower: ``{"llm": 20, "dino": 0, ...}``."""
        return {t: sum(h.tower == t for h in self.heads) for t in self.layout.names}

    # ----------------------------------------------------------------- tensors
    def tensor(self, tower: str) -> torch.Tensor:
        """``mask.tensor("llm")`` -> (layers, heads) bool, True for chosen heads."""
        out = torch.zeros(self.layout.shape(tower), dtype=torch.bool)
        for h in self.heads:
            if h.tower == tower:
                out[h.layer, h.head] = True
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{tower: (layers, heads) bool}`` for every tower of the layout."""
        return {tower: self.tensor(tower) for tower in self.layout.names}

    # ----------------------------------------------------------------- files
    def _fields(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "layout": self.layout.to_dict(),
                "heads": [str(h) for h in self.heads],
                "scores": None if self.scores is None else [None if math.isnan(s) else s for s in self.scores],
                "column": self.column, "method": self.method, "data": self.data, "fingerprint": self.fingerprint}

    @classmethod
    def _from_fields(cls, fields, layout: HeadLayout | None, source: str) -> "HeadMask":
        """The mask a file's fields describe; ``FileFormatError`` naming the file and the field otherwise."""
        if not isinstance(fields, dict):
            raise FileFormatError(source, None, f"expected a JSON object (a {FORMAT} file), got {type(fields).__name__}")
        if fields.get("format") != FORMAT or fields.get("version") != FORMAT_VERSION:
            raise FileFormatError(source, "format", f"expected a {FORMAT} v{FORMAT_VERSION} file "
                                  f"(format={fields.get('format')!r}, version={fields.get('version')!r})")
        found = _read_layout(fields.get("layout"), source)
        if layout is not None and found != layout:
            raise FileFormatError(source, "layout", f"made for layout {found.to_dict()}, but this model has layout "
                                  f"{layout.to_dict()}; a head mask only fits the architecture it was made for")
        heads, scores = fields.get("heads"), fields.get("scores")
        if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
            raise FileFormatError(source, "heads", f"expected a list of head names like 'llm.L12H7', got {heads!r:.80}")
        if scores is not None and (not isinstance(scores, list) or len(scores) != len(heads) or not all(
                s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)) for s in scores)):
            raise FileFormatError(source, "scores", f"expected null or a list of {len(heads)} numbers (one per head, "
                                  f"null for NaN), got {scores!r:.80}")
        text = {}
        for key, default in (("column", None), ("method", ""), ("data", ""), ("fingerprint", None)):
            text[key] = fields.get(key, default)
            if not (isinstance(text[key], str) or (default is None and text[key] is None)):
                raise FileFormatError(source, key, f"expected a string{' or null' if default is None else ''}, "
                                      f"got {text[key]!r:.80}")
        try:
            return cls(found, tuple(Head.parse(h) for h in heads),
                       None if scores is None else tuple(math.nan if s is None else s for s in scores), **text)
        except (ValueError, OverflowError) as err:
            raise FileFormatError(source, "heads", str(err)) from None

    def to_json(self, path: str | Path) -> Path:
        """``mask.to_json("heads.json")``: write the mask as readable JSON (atomically)."""
        return write_json_atomic(path, self._fields())

    @classmethod
    def from_json(cls, path: str | Path, layout: HeadLayout | None = None) -> "HeadMask":
        """``HeadMask.from_json("heads.json", layout=vla.head_layout)``; a different layout is an error."""
        return cls._from_fields(read_json(path, "head mask"), layout, str(path))

    def save_safetensors(self, path: str | Path) -> Path:
        """``mask.save_safetensors("heads.safetensors")``: one bool (L, H) tensor per tower + string metadata."""
        from safetensors.torch import save

        fields = self._fields()
        metadata = {key: json.dumps(fields[key]) for key in fields}
        return atomic_write_bytes(path, save(self.tensors(), metadata=metadata))

    @classmethod
    def load_safetensors(cls, path: str | Path, layout: HeadLayout | None = None) -> "HeadMask":
        """``HeadMask.load_safetensors("heads.safetensors", layout=vla.head_layout)``; checks tensors against heads."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except FileNotFoundError:
            raise FileNotFoundError(f"head mask not found: {path}") from None
        except Exception as err:  # safetensors raises its own SafetensorError for a bad header or a pickle
            raise FileFormatError(path, None, f"not a readable safetensors head mask ({type(err).__name__}: "
                                  f"{err}); expected a file written by HeadMask.save_safetensors") from None
        try:
            fields = {key: json.loads(value) for key, value in raw.items()}
        except json.JSONDecodeError as err:
            raise FileFormatError(path, "<metadata>", f"not robosteer head-mask JSON: {err}") from None
        mask = cls._from_fields(fields, layout, str(path))
        try:
            from_tensors = cls.from_tensors(tensors, mask.layout)
        except ValueError as err:
            raise FileFormatError(path, "<tensors>", str(err)) from None
        if from_tensors.heads != mask.heads:
            raise FileFormatError(path, "heads", "the bool tensors and the 'heads' metadata disagree")
        return mask
