"""robosteer's own small tokenizer, for tiny test models and the embedded default policy.

It follows OpenVLA's conventions so the same code path serves both: Llama-style
special ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2), a BOS-prefixed encoding, a
sentencepiece-style metaspace (``"▁"``) whose bare piece plays the role of Llama-2's
29871, and the **last 256 ids of the base vocabulary reserved for actions**
(``<act_0>`` ... ``<act_255>``), followed by ``<PAD>``. It is a byte-pair encoding
over an ASCII alphabet, so any English instruction encodes without unknown pieces.

Usage::

    tok = build_tokenizer()
    ids = tok("In: What action should the robot take to pick up the red cube?\\nOut:")["input_ids"]
    info = tokenizer_info(tok)  # action_vocab_end, pad_token_id, prompt_suffix_token_id
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Iterable

from .constants import N_ACTION_BINS, PROMPT_TEMPLATE

SPECIALS = ("<unk>", "<s>", "</s>")
METASPACE = "\u2581"

# Words that robot instructions are made of; the default corpus is the prompt template filled with these.
_VERBS = ("pick up", "lift", "grab", "grasp", "take", "put", "place", "set", "move", "push", "slide", "shove", "stack",
          "open", "close", "turn", "rotate", "press", "pull", "drop", "raise", "carry", "bring", "pour", "wipe")
_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "gray", "brown", "cyan",
            "magenta", "crimson", "teal")
_OBJECTS = ("cube", "block", "box", "ball", "sphere", "cylinder", "can", "cup", "mug", "bowl", "plate", "bottle",
            "object", "item", "thing", "brick", "peg", "drawer", "door", "lid", "tray", "basket", "target", "region")
_RELATIONS = ("on", "onto", "on top of", "in", "into", "inside", "next to", "left of", "right of", "in front of",
              "behind", "to the left", "to the right", "forward", "backward", "near", "far from", "between", "above",
              "below", "the one", "closest to", "farthest from", "up", "down", "table", "side", "edge", "center",
              "corner", "of", "with", "and", "a", "an", "the", "it", "that", "this", "small", "large", "big", "tiny",
              "tall", "short", "round", "square", "light", "heavy")


def default_corpus() -> list[str]:
    """Prompts built from a fixed manipulation vocabulary (deterministic)."""
    lines = []
    for i, verb in enumerate(_VERBS):
        for j, colour in enumerate(_COLOURS):
            obj = _OBJECTS[(i + j) % len(_OBJECTS)]
            rel = _RELATIONS[(i * 7 + j) % len(_RELATIONS)]
            other = _COLOURS[(j + 3) % len(_COLOURS)]
            dest = _OBJECTS[(i + 2 * j + 1) % len(_OBJECTS)]
            lines.append(PROMPT_TEMPLATE.format(instruction=f"{verb} the {colour} {obj} {rel} the {other} {dest}"))
    lines.extend(" ".join(group) for group in (_VERBS, _COLOURS, _OBJECTS, _RELATIONS))
    return lines


def build_tokenizer(corpus: Iterable[str] | None = None, merges_vocab_size: int = 512, n_action_bins: int = N_ACTION_BINS):
    """``build_tokenizer()`` -> a ``transformers.PreTrainedTokenizerFast`` with OpenVLA's action-token layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(set(string.printable) - set(" \t\r\x0b\x0c")) + [METASPACE]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Words split on spaces (metaspace, as sentencepiece), punctuation and newlines isolated, so that the
    # prompt's tail ("?", "\n", "Out", ":", "▁") is the same tokens whatever the instruction.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always"),
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=merges_vocab_size, special_tokens=list(SPECIALS), initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=2)
    tok.train_from_iterator(list(corpus) if corpus is not None else default_corpus(), trainer=trainer)
    tok.add_special_tokens([f"<act_{i}>" for i in range(n_action_bins)] + ["<PAD>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<PAD>")
    info = tokenizer_info(fast, n_action_bins)  # validates the layout
    assert info.pad_token_id == info.action_vocab_end
    return fast


@dataclass(frozen=True)
class TokenizerInfo:
    action_vocab_end: int  # action tokens are [action_vocab_end - n_bins, action_vocab_end)
    pad_token_id: int
    prompt_suffix_token_id: int
    vocab_size: int  # ids in use, including <PAD>


def tokenizer_info(tokenizer, n_action_bins: int = N_ACTION_BINS) -> TokenizerInfo:
    """Read the action-token layout of a robosteer tokenizer, checking it is OpenVLA's."""
    first = tokenizer.convert_tokens_to_ids("<act_0>")
    last = tokenizer.convert_tokens_to_ids(f"<act_{n_action_bins - 1}>")
    pad = tokenizer.convert_tokens_to_ids("<PAD>")
    suffix = tokenizer.convert_tokens_to_ids(METASPACE)
    unk = tokenizer.convert_tokens_to_ids("<unk>")
    if unk in (first, last, pad, suffix) or last - first != n_action_bins - 1 or pad != last + 1:
        raise ValueError("tokenizer does not have robosteer's layout (<act_0..N-1> then <PAD> at the end, and a '▁' piece)")
    return TokenizerInfo(action_vocab_end=last + 1, pad_token_id=pad, prompt_suffix_token_id=suffix, vocab_size=pad + 1)
