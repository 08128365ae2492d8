"""Per-model-family maps from canonical site names (tower, layer, q/k/v/out) to module paths.

Supporting a new model family means adding one small file here that returns
``TowerModules`` for each tower; the hook layer, scorers and trainers use nothing else.
"""

from .base import TowerModules

__all__ = ["TowerModules"]
