"""Per-model-family maps from canonical site names (tower, layer, q/k/v/out) to module paths.

A model reaches its family through ``vla.family`` (a :class:`Family`), and the rest of
robosteer asks the model, never a family module: ``vla.tower_modules()`` (hooks, head
deltas, interop), ``vla.unused_modules()`` and ``vla.family.output_modules(vla)`` (LoRA
targeting) and ``vla.head_layout`` (derived from the towers by :func:`head_layout`).

Adding a family is one mapping file plus its towers:

1. ``families/<name>.py`` with ``tower_modules(model) -> {tower: TowerModules}`` (one entry
   per tower: block list, attention / projection attribute names, head geometry),
   ``unused_modules(model) -> [module path]`` and ``output_modules(model) -> [module]`` (the
   output embedding, which LoRA leaves out), and ``FAMILY = Family(name, tower_modules,
   unused_modules, output_modules)``, as ``openvla.py`` does;
2. its line in ``FAMILIES`` below;
3. the model class sets ``family = get_family("<name>")`` and defines ``tower_modules()`` /
   ``unused_modules()`` through it (``models/vla.py``).

The hook layer, scorers and trainers use nothing else.
"""

from .base import Family, FamilyModelMixin, TowerModules, head_layout
from .openvla import FAMILY as OPENVLA
from .pi0 import FAMILY as PI0

FAMILIES: dict[str, Family] = {OPENVLA.name: OPENVLA, PI0.name: PI0}


def get_family(name: str) -> Family:
    """``get_family("openvla")``; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


__all__ = ["FAMILIES", "Family", "FamilyModelMixin", "TowerModules", "get_family", "head_layout"]
