"""Instruction wording: templates per task family, held-out paraphrases and synonyms.

``instruction(...)`` is called by ``scene.sample_scene`` with the scene's random
generator, so the wording of a task instance is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

# One phrasing per family, used for pretraining.
BASE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "lift": ("pick up the {obj}",),
    "place": ("put the {obj} on the {plate} plate",),
    "push": ("push the {obj} to the {dir}",),
    "stack": ("stack the {obj} on the {support}",),
}

# Held-out phrasings (the "paraphrase" template set).
PARAPHRASE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "lift": ("grab the {obj} and lift it", "raise the {obj} off the table", "lift up the {obj}"),
    "place": (
        "place the {obj} onto the {plate} plate",
        "move the {obj} to the {plate} plate and let go",
        "set the {obj} down on the {plate} plate",
    ),
    "push": ("slide the {obj} to the {dir}", "shove the {obj} toward the {dir}", "nudge the {obj} over to the {dir}"),
    "stack": ("put the {obj} on top of the {support}", "place the {obj} onto the {support}"),
}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {"base": BASE_TEMPLATES, "paraphrase": PARAPHRASE_TEMPLATES}

# Held-out words for colours and shapes.
SYNONYMS: dict[str, str] = {
    "red": "crimson",
    "green": "lime",
    "blue": "navy",
    "yellow": "golden",
    "purple": "violet",
    "orange": "amber",
    "cyan": "turquoise",
    "cube": "block",
    "cylinder": "can",
    "ball": "sphere",
}
SYNONYM_PROBABILITY = 0.5  # per word, so that held-out phrasings mix old and new words


def word(text: str, rng: np.random.Generator, synonyms: bool) -> str:
    """``text`` itself, or with ``synonyms`` its held-out synonym half of the time."""
    if synonyms and text in SYNONYMS and rng.random() < SYNONYM_PROBABILITY:
        return SYNONYMS[text]
    return text


def object_phrase(color: str, shape: str, rng: np.random.Generator, synonyms: bool = False) -> str:
    """``object_phrase("red", "cube", rng) == "red cube"``."""
    return f"{word(color, rng, synonyms)} {word(shape, rng, synonyms)}"


def relational_phrase(target: str, side: str, reference: str) -> str:
    """``relational_phrase("red cube", "left", "green ball") == "red cube to the left of the green ball"``."""
    return f"{target} to the {side} of the {reference}"


def instruction(
    family: str,
    rng: np.random.Generator,
    *,
    template_set: str,
    obj: str,
    plate: str | None = None,
    direction: str | None = None,
    support: str | None = None,
) -> str:
    """Fill a template of ``family`` drawn from ``template_set`` with the given phrases."""
    options = TEMPLATES[template_set][family]
    template = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
    return template.format(obj=obj, plate=plate, dir=direction, support=support)
