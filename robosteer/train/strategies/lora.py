"""``lora``: OpenVLA's LoRA baseline through ``peft``.

OpenVLA finetunes with ``LoraConfig(r=32, lora_alpha=16, lora_dropout=0.0,
target_modules="all-linear", init_lora_weights="gaussian")``. On its HF model (a
``PreTrainedModel``) peft's ``"all-linear"`` means every ``nn.Linear`` except the output
embedding. ``OpenVLA`` here is a plain ``nn.Module``, for which peft cannot find the output
embedding and would also wrap ``lm_head``; so ``"all-linear"`` is resolved here to an
explicit list of module paths: every ``nn.Linear`` except ``language_model.lm_head`` and
except the modules that OpenVLA's forward never runs (each vision tower's blocks after
its feature layer, and SigLIP's ``attn_pool``) — their LoRA weights could never receive a
gradient. Trainable scalars: ``r * (in + out)`` summed over the targeted linears.

The adapter is injected in place (``peft.inject_adapter_in_model``), so the model stays
an ``OpenVLA`` with the same forward; it is saved in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``, see ``train/adapters.py``).

Usage::

    strategy = LoraStrategy(LoraSettings(r=32))
    strategy.prepare(vla)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .base import freeze
from .lora_config import ALL_LINEAR, LoraSettings


def all_linear_targets(vla: nn.Module) -> list[str]:
    """``all_linear_targets(vla)`` -> module paths of every ``nn.Linear`` that runs, except ``lm_head``."""
    skip = [f"{path}." for path in vla.unused_modules()]  # blocks after the feature layer, SigLIP's attn_pool
    outputs = vla.family.output_modules(vla)  # the output embedding (models/vla.py has no method for it)
    return [name for name, module in vla.named_modules()
            if isinstance(module, nn.Linear) and not any(module is output for output in outputs)
            and not any(f"{name}.".startswith(prefix) for prefix in skip)]


def peft_config(vla: nn.Module, settings: LoraSettings):
    """The ``peft.LoraConfig`` for this model (``"all-linear"`` resolved to explicit paths)."""
    from peft import LoraConfig

    targets = all_linear_targets(vla) if settings.target_modules == ALL_LINEAR else list(settings.target_modules)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
                      init_lora_weights=settings.init, bias="none")


class LoraStrategy:
    """``lora``: peft LoRA adapters on the targeted linears; the base model is frozen."""

    name = "lora"

    def __init__(self, settings: LoraSettings = LoraSettings()) -> None:
        self.settings = settings
        self.base_fingerprint: str | None = None

    def prepare(self, vla: nn.Module) -> None:
        from peft import inject_adapter_in_model

        if any(".lora_" in name for name, _ in vla.named_parameters()):
            raise ValueError("this model already carries LoRA adapters; use a fresh base model")
        self.base_fingerprint = vla.fingerprint()
        freeze(vla)
        inject_adapter_in_model(peft_config(vla, self.settings), vla)
        for name, p in vla.named_parameters():
            p.requires_grad_(".lora_" in name)

    def save(self, vla: nn.Module, directory: str | Path) -> Path:
        """peft's adapter format (``adapter_config.json`` + ``adapter_model.safetensors``)."""
        from ..adapters import save_lora_adapter

        if self.base_fingerprint is None:
            raise ValueError("the lora strategy has not been applied to a model (call prepare first)")
        return save_lora_adapter(vla, directory, self.settings, self.base_fingerprint)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings.to_dict()}
