"""LoRA on the language model only (arXiv 2510.15231, Appendix D.1: rank 8, alpha 16, dropout 0.05 on q or qkvo),
with dropout fused into ``lora_A`` and activation checkpointing set up by policy: what ``VLATModule`` trains."""

from __future__ import annotations

from typing import Literal

LoraTargets = Literal["q", "qkvo"]
LORA_TARGET_REGEX = {
    # the audio tower's attention also has q_proj/k_proj/v_proj: restrict to the language model
    "q": r".*language_model.*\.q_proj",
    "qkvo": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
}


def add_lora(model, targets: LoraTargets = "qkvo", rank: int = 8, alpha: int = 16, dropout: float = 0.05):
    """PEFT LoRA on the language model's attention projections only; every other weight frozen."""
    from peft import LoraConfig, get_peft_model

    if targets not in LORA_TARGET_REGEX:
        raise ValueError(f"lora_targets: {targets!r} is not one of {', '.join(LORA_TARGET_REGEX)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_REGEX[targets])
    return get_peft_model(model, config)


def set_lora_input_casting(model, enabled: bool) -> int:
    """PEFT copies every LoRA layer's input to the adapter's dtype (fp32 adapters under bf16 weights), and autocast
    copies it back to bf16 for the matmul: two copies of every q/k/v/o input per layer. Under mixed precision every
    forward (and checkpoint recomputation) runs in autocast, so ``enabled=False`` lets LoRA take the activations as
    they are; the fp32 master weights and optimizer state stay. Returns the number of LoRA layers set."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.cast_input_dtype_enabled = enabled
    return len(layers)


def prepare_for_training(
    model,
    lora_targets: LoraTargets = "qkvo",
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    gradient_checkpointing: bool | str = "off",
):
    """Freeze ``model``, add LoRA to its language model (dropout fused into ``lora_A``) and set up activation
    checkpointing by policy (:mod:`vlat.training.activation_checkpointing`: ``full`` / ``selective`` set here, ``auto`` per
    batch by the caller).

    What ``VLATModule`` trains (and ``bench/train_step.py`` measures). Returns the PEFT-wrapped model.
    """
    from vlat.training.activation_checkpointing import (
        layer_mask,
        layers_to_checkpoint,
        policy_of,
        set_checkpointed_layers,
    )
    from vlat.training.lora_dropout import fuse_lora_dropout

    policy = policy_of(gradient_checkpointing)
    model.requires_grad_(False)
    model = add_lora(model, lora_targets, lora_rank, lora_alpha, lora_dropout)
    fuse_lora_dropout(model)  # no stored masks or dropped copies of the activations (vlat.training.lora_dropout)
    if policy != "off":
        # transformers hooks every input-embedding layer to require grad, the audio tower's conv1 included,
        # which makes the frozen encoder build a full autograd graph. Non-reentrant checkpointing needs no
        # input gradients: drop those hooks so the tower and projector run graph-free (as under no_grad).
        base = model.base_model.model
        base.config.use_cache = False
        base.activation_checkpointing_enable({"use_reentrant": False})
        base.disable_input_require_grads()
        layers = base.model.language_model.layers
        k = layers_to_checkpoint(policy, len(layers), 0, 0, 0, None)  # auto: none until a batch is planned
        set_checkpointed_layers(layers, layer_mask(k, len(layers)))
    return model
