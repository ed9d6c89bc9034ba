"""The rotary-embedding module that replaces ``language_model.rotary_emb``: positions plan in, (cos, sin) out.

The stock module computes ``cos/sin(position * inv_freq)`` once per forward. This one does the same from a *plan*
that :mod:`vlat.rope.patch` prepares for the current call:

- partial methods (§3.1-3.2): pairs ``i < cutoff_dim`` use raw positions, the others warped positions; cos and sin of
  warped audio tokens are scaled by ``1/sqrt(t)``;
- whole methods: Hugging Face's own ``linear`` / ``yarn`` inverse frequencies and attention factor, per sample.

With compressed audio (:mod:`vlat.audio.compression`) the plan also carries ``raw``: the time-aligned unwarped positions
that replace ``position_ids`` everywhere (vanilla included). Without a plan (vanilla, or a call that bypasses the
outer model) it computes exactly what the stock module does.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from vlat.audio.compression import AudioCompression
from vlat.rope.config import AudioRopeConfig


@dataclass
class RopePlan:
    """Per-call inputs of :class:`AudioRotaryEmbedding`; all tensors on the model's device."""

    raw: torch.Tensor | None = None  # (B, T) unwarped positions when they are not position_ids (compressed audio)
    positions: torch.Tensor | None = None  # (B, T) warped positions (partial methods)
    scale: torch.Tensor | None = None  # (B, T) cos/sin multiplier (partial methods; 1/sqrt(t) on warped audio)
    factor: torch.Tensor | None = None  # (B,) whole-context factor per sample (whole methods)


class AudioRotaryEmbedding(nn.Module):
    """Drop-in for the stock ``Qwen2RotaryEmbedding`` (same ``forward(x, position_ids)`` signature)."""

    def __init__(self, stock: nn.Module, text_config, cfg: AudioRopeConfig):
        super().__init__()
        self.stock = stock  # kept for restoring vanilla; moves with .to() as a submodule
        self.text_config = text_config
        self.cfg = cfg
        self.compression = AudioCompression()  # set by vlat.rope.patch.apply_audio_compression
        self.plan: RopePlan | None = None
        self.plan_shape: tuple[int, int] | None = None
        self.pending_state = None
        self._whole_cache: dict[tuple[str, float], tuple[torch.Tensor, float]] = {}

    def reset_cache(self) -> None:
        self._whole_cache.clear()

    @property
    def inv_freq(self) -> torch.Tensor:
        return self.stock.inv_freq

    @property
    def attention_scaling(self) -> float:
        return self.stock.attention_scaling

    def whole_inv_freq(self, factor: float) -> tuple[torch.Tensor, float]:
        """Hugging Face's ``linear`` / ``yarn`` inverse frequencies and attention factor for one factor value."""
        rope_type = "linear" if self.cfg.method == "whole_pi" else "yarn"
        key = (rope_type, factor)
        if key not in self._whole_cache:
            conf = copy.deepcopy(self.text_config)
            params = {"rope_type": rope_type, "rope_theta": conf.rope_parameters["rope_theta"], "factor": factor}
            if rope_type == "yarn":
                params["original_max_position_embeddings"] = conf.max_position_embeddings
            conf.rope_parameters = params
            inv_freq, attn = ROPE_INIT_FUNCTIONS[rope_type](conf, device=self.inv_freq.device)
            self._whole_cache[key] = (inv_freq.to(torch.float32), float(attn))
        return self._whole_cache[key]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        if plan is not None and tuple(position_ids.shape[:2]) != self.plan_shape:
            raise RuntimeError(
                f"audio RoPE plan was prepared for shape {self.plan_shape} but got positions {tuple(position_ids.shape)}; "
                "call the Qwen2-Audio model, not its language model directly"
            )
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float32)  # (D/2,)
        raw = (plan.raw if plan is not None and plan.raw is not None else position_ids).to(torch.float32)[..., None]
        if plan is None or (plan.positions is None and plan.factor is None):
            freqs = raw * inv_freq
            scale = None
            attn = self.attention_scaling
        elif plan.factor is not None:  # whole_pi / whole_yarn: per-sample frequencies
            rows, attns = zip(*(self.whole_inv_freq(float(f)) for f in plan.factor.tolist()), strict=True)
            per_sample = torch.stack(rows).to(x.device)[:, None, :]  # (B, 1, D/2)
            freqs = raw * per_sample
            scale = torch.tensor(attns, device=x.device, dtype=torch.float32)[:, None, None]
            attn = 1.0
        else:  # partial: raw positions for the first cutoff pairs, warped for the rest
            c = self.cfg.cutoff_dim
            warped = plan.positions.to(torch.float32)[..., None]
            freqs = torch.cat((raw * inv_freq[:c], warped * inv_freq[c:]), dim=-1)
            scale = plan.scale[..., None] if plan.scale is not None else None
            attn = self.attention_scaling
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        cos, sin = emb.cos() * attn, emb.sin() * attn
        if scale is not None:
            cos, sin = cos * scale, sin * scale
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def temperature_scale(warped_audio: torch.Tensor, temperature: float) -> torch.Tensor | None:
    """(B, T) multiplier ``1/sqrt(t)`` on warped audio tokens and 1 elsewhere; None when ``t == 1``."""
    if temperature == 1.0:
        return None
    one = torch.ones(warped_audio.shape, dtype=torch.float32, device=warped_audio.device)
    return torch.where(warped_audio, one / math.sqrt(temperature), one)
