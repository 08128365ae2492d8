"""What an intervention site is and how it is named.

Every other module (hooks, scorers, head masks, plots, adapters, file formats)
names heads and hook points through this file, so that one string form is used
everywhere:

- a head is ``Head("llm", 12, 7)``, written ``"llm.L12H7"``;
- a hook point follows TransformerLens, prefixed by the tower:
  ``"llm.blocks.12.attn.hook_z"``, ``"dino.blocks.3.hook_resid_pre"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Hook kinds at the attention of a block (``{tower}.blocks.{l}.attn.{kind}``) and on the
# residual stream of a block (``{tower}.blocks.{l}.{kind}``).
ATTN_HOOKS: tuple[str, ...] = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_pattern", "hook_attn_out")
BLOCK_HOOKS: tuple[str, ...] = ("hook_resid_pre", "hook_resid_post")

_HEAD_RE = re.compile(r"^(?:(?P<tower>[a-z][a-z0-9_]*)\.)?L(?P<layer>\d+)H(?P<head>\d+)$")
_HOOK_RE = re.compile(
    r"^(?P<tower>[a-z][a-z0-9_]*)\.blocks\.(?P<layer>\d+)\.(?:(?P<attn>attn)\.)?(?P<kind>hook_[a-z_]+)$"
)


@dataclass(frozen=True, order=True)
class Head:
    """One attention head: ``Head("llm", 12, 7)``, printed as ``llm.L12H7``."""

    tower: str
    layer: int
    head: int

    def __post_init__(self) -> None:
        if not isinstance(self.tower, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", self.tower):
            raise ValueError(f"tower must be a lower-case identifier like 'llm', got {self.tower!r}")
        for name in ("layer", "head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Head.{name} must be a non-negative int, got {value!r}")

    def __str__(self) -> str:
        return f"{self.tower}.L{self.layer}H{self.head}"

    @property
    def hook_z(self) -> str:
        """The hook name holding this head's output (before the output projection)."""
        return hook_name(self.tower, self.layer, "hook_z")

    @classmethod
    def parse(cls, text: "str | Head", default_tower: str | None = None) -> "Head":
        """``Head.parse("llm.L12H7")``; ``"L12H7"`` needs ``default_tower``."""
        if isinstance(text, Head):
            return text
        match = _HEAD_RE.match(str(text).strip())
        if match is None:
            raise ValueError(f"cannot parse head {text!r}: expected the form 'llm.L12H7' (tower.L<layer>H<head>)")
        tower = match["tower"] or default_tower
        if tower is None:
            raise ValueError(f"head {text!r} names no tower: write it as 'llm.{text}' (or dino./siglip.)")
        return cls(tower, int(match["layer"]), int(match["head"]))


def hook_name(tower: str, layer: int, kind: str) -> str:
    """``hook_name("llm", 3, "hook_z") == "llm.blocks.3.attn.hook_z"``."""
    if kind in ATTN_HOOKS:
        return f"{tower}.blocks.{layer}.attn.{kind}"
    if kind in BLOCK_HOOKS:
        return f"{tower}.blocks.{layer}.{kind}"
    raise ValueError(f"unknown hook kind {kind!r}; known: {', '.join(ATTN_HOOKS + BLOCK_HOOKS)}")


@dataclass(frozen=True)
class HookSite:
    """A parsed hook name: tower, layer and kind (``hook_z``, ``hook_resid_pre``, ...)."""

    tower: str
    layer: int
    kind: str

    def __str__(self) -> str:
        return hook_name(self.tower, self.layer, self.kind)

    @classmethod
    def parse(cls, name: str) -> "HookSite":
        """``HookSite.parse("llm.blocks.3.attn.hook_z")``."""
        match = _HOOK_RE.match(name)
        if match is None:
            raise ValueError(
                f"cannot parse hook name {name!r}: expected '{{tower}}.blocks.{{layer}}.attn.hook_z' "
                f"or '{{tower}}.blocks.{{layer}}.hook_resid_pre'"
            )
        kind = match["kind"]
        expected_attn = kind in ATTN_HOOKS
        if kind not in ATTN_HOOKS + BLOCK_HOOKS or expected_attn != bool(match["attn"]):
            raise ValueError(f"unknown hook {name!r}; attention hooks: {ATTN_HOOKS}, block hooks: {BLOCK_HOOKS}")
        return cls(match["tower"], int(match["layer"]), kind)


@dataclass(frozen=True)
class HeadLayout:
    """How many layers and heads each tower has: ``HeadLayout({"llm": (32, 32), "dino": (24, 16)})``.

    Used to enumerate heads, to shape per-tower score grids and boolean head masks,
    and to refuse a mask or adapter made for another architecture.
    """

    towers: tuple[tuple[str, int, int], ...]  # (tower, n_layers, n_heads), in model order

    def __init__(self, towers) -> None:
        items = tuple(towers.items()) if isinstance(towers, dict) else tuple(towers)
        normalised = []
        for item in items:
            name, dims = (item[0], item[1:]) if len(item) == 3 else (item[0], tuple(item[1]))
            n_layers, n_heads = (int(d) for d in dims)
            if n_layers <= 0 or n_heads <= 0:
                raise ValueError(f"tower {name!r} needs positive layer and head counts, got {n_layers}x{n_heads}")
            normalised.append((str(name), n_layers, n_heads))
        if len({t for t, _, _ in normalised}) != len(normalised):
            raise ValueError(f"duplicate tower names in {normalised}")
        object.__setattr__(self, "towers", tuple(normalised))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t for t, _, _ in self.towers)

    def shape(self, tower: str) -> tuple[int, int]:
        """``(n_layers, n_heads)`` of a tower."""
        for name, n_layers, n_heads in self.towers:
            if name == tower:
                return n_layers, n_heads
        raise KeyError(f"unknown tower {tower!r}; this model has towers {list(self.names)}")

    def heads(self, tower: str | None = None) -> list[Head]:
        """Every head, tower by tower, layer-major."""
        towers = self.names if tower is None else (tower,)
        out = []
        for name in towers:
            n_layers, n_heads = self.shape(name)
            out.extend(Head(name, layer, head) for layer in range(n_layers) for head in range(n_heads))
        return out

    def validate(self, head: Head) -> Head:
        """Raise a clear error unless ``head`` exists in this layout."""
        if head.tower not in self.names:
            raise ValueError(f"head {head} names tower {head.tower!r}; this model has towers {list(self.names)}")
        n_layers, n_heads = self.shape(head.tower)
        if head.layer >= n_layers or head.head >= n_heads:
            raise ValueError(f"head {head} does not exist: tower {head.tower!r} has {n_layers} layers x {n_heads} heads")
        return head

    def to_dict(self) -> dict[str, list[int]]:
        return {name: [n_layers, n_heads] for name, n_layers, n_heads in self.towers}

    def __len__(self) -> int:
        return sum(n_layers * n_heads for _, n_layers, n_heads in self.towers)
