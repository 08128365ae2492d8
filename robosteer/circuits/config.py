"""``DiscoverConfig``: the settings of head discovery, and ``METHODS``, the one registry of head selectors.

Kept free of numpy and torch (``discover.py`` does the work), so that command lines can
declare their flags from these fields (``robosteer.config_cli``) and list the selectors
without loading either: ``robosteer discover``, ``robosteer finetune --top-k K --selector S``
and the main example all take their choices from here.

Usage::

    config = DiscoverConfig(method="knn", top_k=8, towers=("llm",))
    "attribution" in METHODS
    "knn" in RECORD_METHODS  # scored on recorded activations; PROBE_METHODS score on probes, PREDICTION_METHODS
                             # on the policy's predictions over the demonstrations with one head replaced
"""

from __future__ import annotations

from dataclasses import dataclass, field

# every head selector, by name; "knn" selects as the released code does (circuits.released_selection),
# "knn-robosteer" by each head's own best-k score (HeadMask.select on knn_scores), robosteer's earlier variant;
# "cma" by the rise in action error when a head's output at the first action token is replaced by its mean
# (circuits.mediation, the release's causal-mediation selector)
METHODS: tuple[str, ...] = ("knn", "knn-robosteer", "activation", "attribution", "sav", "cma", "variance", "random")
PROBE_METHODS: tuple[str, ...] = ("activation", "attribution")  # the causal scorers, which score heads on probes
RECORD_METHODS: tuple[str, ...] = ("knn", "knn-robosteer", "sav", "variance")  # the scorers of recorded head outputs (circuits.record)
PREDICTION_METHODS: tuple[str, ...] = ("cma",)  # the scorers of the policy's own predictions with a head replaced
POSITIONS: tuple[str, ...] = ("last_prompt", "first_action", "mean_action")  # LLM token positions (circuits.record)


@dataclass(frozen=True)
class DiscoverConfig:
    """One discovery run: which scorer, on which towers and positions, how many heads to keep."""

    method: str = field(default="knn", metadata={"help": "head scorer", "choices": METHODS})
    top_k: int = field(default=8, metadata={"help": "heads to select (globally across the recorded towers)"})
    towers: tuple[str, ...] = field(default=("llm",), metadata={
        "help": "towers whose heads are scored: llm, dino, siglip"})
    position: str = field(default="first_action", metadata={
        "help": "LLM token position that knn and sav record (cma: first_action only)", "choices": POSITIONS})
    keyframes_only: bool = field(default=True, metadata={"help": "record only the keyframes of the demonstrations"})
    probes: tuple[str, ...] = field(default=("visual", "linguistic", "physical"), metadata={
        "help": "probe kinds for activation / attribution"})
    probe_pairs: int = field(default=12, metadata={"help": "clean/corrupted pairs per probe"})
    probe_task: str | None = field(default=None, metadata={
        "help": "sim task for the probes; default: the demonstrations' most common task"})
    seed: int = field(default=0, metadata={
        "help": "random draws: the random scorer's scores and the sim probes' scenes"})
    unnorm_key: str | None = field(default=None, metadata={
        "help": "which of the policy's dataset statistics tokenize the demonstrated actions"})
    stream: bool = field(default=False, metadata={
        "help": "knn / sav: write activations to OUT/activations batch by batch (bounded memory)"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.method in PROBE_METHODS and not self.probes:
            raise ValueError(f"method {self.method!r} needs at least one probe")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.method in PREDICTION_METHODS and (tuple(self.towers) != ("llm",) or self.position != "first_action"):
            raise ValueError(f"method {self.method!r} replaces LLM heads at the first action token: it needs "
                             f"towers=('llm',) and position='first_action', got towers={self.towers} and "
                             f"position={self.position!r}")
