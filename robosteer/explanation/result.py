"""What ``explain`` returns: a small frozen ``Explanation`` with pandas and plotly views.

Every array is read-only numpy. Actions are ``(K, A)``: K = 1 for a token model (whose
``predict_action`` returns ``action[0]``), the chunk length for a regression head; every action
of a chunk is explained, and the views pick one with ``step=`` (default 0, the first).

Usage::

    ex = robosteer.explain(vla, image, "pick up the red cube")
    ex.to_frame()                      # heads x action dims: each head's direct effect (expected action)
    ex.top(5, dim="dz")                # [(Head, effect), ...] by |effect|
    ex.parts["logit"].gap              # (K, A): ~0, the chosen token's logit is linear in the residual
    ex.contribution_map(dim="dz")      # plotly layer x head map, diverging around 0
    ex.attention_map("llm.L3H1", view=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..sites import Head
from .attention import AttentionMaps

UNITS = {"logit": "logit", "expected": "action units", "action": "action units"}
WHAT = {"logit": "the chosen token's logit", "expected": "the expected action over the 256 bins",
        "action": "the regression head's action"}


def frozen(array) -> np.ndarray:
    out = np.array(array, dtype=np.float64 if np.asarray(array).dtype.kind == "f" else None, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Decomposition:
    """One explained quantity over (K, A): ``value = heads.sum(0) + sum(rest) + gap``."""

    name: str  # "logit", "expected" or "action"
    linear: bool  # True: exactly linear in the residual (gap is float rounding); False: linearised at the point
    heads: np.ndarray  # (n_heads, K, A): each LLM head's direct effect, rows in Explanation.heads order
    rest: Mapping[str, np.ndarray]  # item -> (K, A): embed, llm.L{l}.mlp, attn_bias, baseline
    value: np.ndarray  # (K, A): the quantity as the model computed it

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", frozen(self.heads))
        object.__setattr__(self, "rest", MappingProxyType({k: frozen(v) for k, v in self.rest.items()}))
        object.__setattr__(self, "value", frozen(self.value))

    @property
    def unit(self) -> str:
        return UNITS[self.name]

    @property
    def what(self) -> str:
        """What the quantity is, in words (for titles)."""
        return WHAT[self.name]

    @property
    def rest_total(self) -> np.ndarray:
        """(K, A): what the heads do not explain (embeddings, MLPs, biases, the empty-residual baseline)."""
        return sum(self.rest.values())

    @property
    def total(self) -> np.ndarray:
        """(K, A): heads + rest, the linear (or linearised) total."""
        return self.heads.sum(0) + self.rest_total

    @property
    def gap(self) -> np.ndarray:
        """(K, A): value - total; float rounding for a linear quantity, the linearisation's error otherwise."""
        return self.value - self.total

    def minus(self, other: "Decomposition") -> "Decomposition":
        """Element-wise difference (adapted - base), for the adapter's delta contributions."""
        return Decomposition(self.name, self.linear, self.heads - other.heads,
                             {k: self.rest[k] - other.rest[k] for k in self.rest}, self.value - other.value)


@dataclass(frozen=True, eq=False)
class Intervention:
    """The action with a head set ablated or patched, in action units (those of ``predict_action``)."""

    heads: tuple[Head, ...]
    how: str  # "zero", "mean" or "patch"
    action: np.ndarray  # (K, A) the intervened model's action
    effect: np.ndarray  # (K, A) action - the explained action
    expected: np.ndarray | None = None  # (1, A) token models: the expected action under the intervention
    expected_effect: np.ndarray | None = None  # (1, A) expected - the explained expected action


@dataclass(frozen=True, eq=False)
class BaseComparison:
    """An adapted model against its base, each read on its own prediction (its own greedy decode for tokens)."""

    action: np.ndarray  # (K, A) the base model's action
    tokens: np.ndarray | None  # (A,) the base model's greedy tokens (token models)
    parts: Mapping[str, Decomposition]  # the base model's decomposition of its own prediction
    delta: Mapping[str, Decomposition]  # adapted - base: each head's delta contribution, per quantity


@dataclass(frozen=True, eq=False)
class Explanation:
    """Why a VLA chose its action: per-head direct effects, attention, interventions, adapter deltas."""

    heads: tuple[Head, ...]  # every LLM head, layer-major ("llm.L0H0", "llm.L0H1", ...)
    n_layers: int
    n_heads: int
    action_names: tuple[str, ...]  # (A,)
    action: np.ndarray  # (K, A) un-normalised, as predict_action returns it
    tokens: np.ndarray | None  # (A,) the greedy action tokens (token models)
    parts: Mapping[str, Decomposition]  # quantity -> decomposition ("logit", "expected" | "action")
    attention: AttentionMaps
    z: np.ndarray  # (L, P, H, Dh) each head's output at the read positions (a patching source)
    read_positions: tuple[int, ...]  # (P,) sequence positions the action is read from
    intervention: Intervention | None = None
    base: BaseComparison | None = None
    passes: int = 1  # model passes made (a pass = what predict_action costs)
    backward: int = 1  # backward calls made (one, through the readout only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", frozen(self.action))
        object.__setattr__(self, "z", frozen(self.z))
        object.__setattr__(self, "parts", MappingProxyType(dict(self.parts)))
        if self.tokens is not None:
            object.__setattr__(self, "tokens", frozen(self.tokens))

    # ----------------------------------------------------------------- selection
    @property
    def default_quantity(self) -> str:
        return "expected" if "expected" in self.parts else "action"

    @property
    def chunk(self) -> int:
        return self.action.shape[0]

    def _part(self, quantity: str | None, delta: bool = False) -> Decomposition:
        quantity = self.default_quantity if quantity is None else quantity
        if quantity not in self.parts:
            raise ValueError(f"no quantity {quantity!r}; this explanation has {list(self.parts)}")
        if delta:
            if self.base is None:
                raise ValueError("delta=True needs explain(..., base=base_vla)")
            return self.base.delta[quantity]
        return self.parts[quantity]

    def _dim(self, dim: int | str) -> int:
        if isinstance(dim, str):
            if dim not in self.action_names:
                raise ValueError(f"no action dimension {dim!r}; dimensions are {list(self.action_names)}")
            return self.action_names.index(dim)
        if not 0 <= dim < len(self.action_names):
            raise ValueError(f"action dimension {dim} out of range 0..{len(self.action_names) - 1}")
        return int(dim)

    def _step(self, step: int) -> int:
        if not 0 <= step < self.chunk:
            raise ValueError(f"step {step} out of range: the chunk has {self.chunk} action(s)")
        return int(step)

    # ----------------------------------------------------------------- views
    def effects(self, dim: int | str = 0, quantity: str | None = None, step: int = 0, delta: bool = False) -> np.ndarray:
        """``(n_heads,)``: each head's direct effect on one action dimension (rows in ``heads`` order)."""
        return self._part(quantity, delta).heads[:, self._step(step), self._dim(dim)]

    def grid(self, dim: int | str = 0, quantity: str | None = None, step: int = 0, delta: bool = False) -> np.ndarray:
        """``(layers, heads)`` of :meth:`effects`."""
        return self.effects(dim, quantity, step, delta).reshape(self.n_layers, self.n_heads)

    def to_frame(self, quantity: str | None = None, step: int = 0, rest: bool = False, delta: bool = False):
        """pandas DataFrame, index ``head`` (``llm.L3H1``), one column per action dimension; ``rest=True`` adds a
        row per non-head item (embed, llm.L{l}.mlp, attn_bias, baseline) and ``gap``, so each column sums to the
        quantity's value."""
        import pandas as pd

        part, k = self._part(quantity, delta), self._step(step)
        rows = {str(h): part.heads[i, k] for i, h in enumerate(self.heads)}
        if rest:
            rows.update({name: values[k] for name, values in part.rest.items()})
            rows["gap"] = part.gap[k]
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(self.action_names))
        frame.index.name = "head"
        return frame

    def top(self, n: int = 10, dim: int | str = 0, quantity: str | None = None, step: int = 0,
            delta: bool = False) -> list[tuple[Head, float]]:
        """``ex.top(5, dim="dz")`` -> the n heads with the largest |direct effect|, as ``(Head, signed effect)``."""
        values = self.effects(dim, quantity, step, delta)
        order = np.argsort(-np.abs(values), kind="stable")[:n]
        return [(self.heads[i], float(values[i])) for i in order]

    def summary(self, quantity: str | None = None, step: int = 0):
        """pandas DataFrame, one row per action dimension: value, heads, rest, total (heads + rest), gap."""
        import pandas as pd

        part, k = self._part(quantity), self._step(step)
        return pd.DataFrame({"value": part.value[k], "heads": part.heads.sum(0)[k], "rest": part.rest_total[k],
                             "total": part.total[k], "gap": part.gap[k]}, index=list(self.action_names))

    def contribution_map(self, dim: int | str = 0, quantity: str | None = None, step: int = 0, delta: bool = False,
                         title: str | None = None):
        """plotly Figure: layer x head map of the direct effects on one dimension, diverging around 0."""
        from .figures import contribution_map

        return contribution_map(self, dim, quantity, step, delta, title)

    def attention_map(self, head: Head | str, view: int = 0, at: int | str | None = None, title: str | None = None):
        """plotly Figure: the head's attention over one camera view's patch grid (a heat map over the frame)."""
        from .figures import attention_map

        return attention_map(self, head, view, at, title)
