"""LoRA dropout that stores no mask and no dropped copy of the activations.

PEFT computes ``lora_B(lora_A(dropout(x)))``: for backward, every adapted projection keeps its own dropped copy of
its input and the dropout mask, both the size of the activations (q, k and v share one input, so a layer with qkvo
LoRA keeps four copies and four masks, about a quarter of what the layer keeps for backward). Here the dropout is
fused into ``lora_A``: the forward draws a seed, builds the mask from it, and keeps only ``x`` (one shared tensor
for q, k and v) and the seed; backward rebuilds the same mask. Same distribution as ``nn.Dropout(p)`` (inverted
dropout, ``x * mask / (1 - p)``), a different random stream. Installed at one seam: each LoRA layer's
``lora_dropout`` becomes ``Identity`` and its ``lora_A`` a :class:`DropoutLinear` holding the same weight
``Parameter`` (names, state dicts and saved adapters unchanged). Checkpoint recomputation draws the same seed (the
CPU RNG state is restored by non-reentrant checkpointing).
"""

from __future__ import annotations

import torch
from torch import nn


def dropout_mask(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Keep-mask of ``x``'s shape (True = kept, probability ``1 - p``), reproducible from ``seed`` on x's device."""
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    return torch.empty(x.shape, dtype=torch.float32, device=x.device).uniform_(generator=gen) >= p


class _DropoutLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.p, ctx.seed = p, seed
        dropped = x * dropout_mask(x, p, seed) / (1.0 - p)
        return nn.functional.linear(dropped, weight.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        mask = dropout_mask(x, ctx.p, ctx.seed)
        grad = grad.to(x.dtype)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(x.dtype)) * mask / (1.0 - ctx.p)
        if ctx.needs_input_grad[1]:
            dropped = (x * mask / (1.0 - ctx.p)).reshape(-1, x.shape[-1])
            grad_w = (grad.reshape(-1, grad.shape[-1]).t() @ dropped).to(weight.dtype)
        return grad_x, grad_w, None, None


class DropoutLinear(nn.Linear):
    """``linear(dropout(x))`` without bias, the dropout fused (training only; plain ``linear`` in eval)."""

    def __init__(self, linear: nn.Linear, p: float):
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = linear.weight  # the same Parameter: optimizer, state dict and adapter files see no change
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return nn.functional.linear(x, self.weight.to(x.dtype))
        seed = int(torch.randint(0, 2**62, (1,)))  # CPU RNG: no device sync; restored by checkpoint recomputation
        return _DropoutLinear.apply(x, self.weight, self.p, seed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


def fuse_lora_dropout(model: nn.Module) -> int:
    """Replace every LoRA layer's ``Dropout`` + ``lora_A`` pair with :class:`DropoutLinear`; returns how many."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, drop in list(module.lora_dropout.items()):
            lin = module.lora_A[name]
            if isinstance(drop, nn.Dropout) and drop.p > 0 and type(lin) is nn.Linear and lin.bias is None:
                module.lora_A[name] = DropoutLinear(lin, drop.p)
                module.lora_dropout[name] = nn.Identity()
                n += 1
    return n
