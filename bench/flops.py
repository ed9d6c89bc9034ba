"""Model FLOPs of Qwen2-Audio LoRA training steps and prefix-reuse evaluation (the MFU numerator).

Counted: every matrix multiply and convolution the step needs, at 2 FLOPs per multiply-add; nothing else
(norms, softmax, RoPE, elementwise ops are left out). Recomputation under activation checkpointing is not counted
(model FLOPs, not hardware FLOPs).

Per 30-s window (audio tower and projector, frozen, forward only; all 1500 frames run, masked or not)::

    conv1 2·3000·(3·mel)·d_a + conv2 2·1500·(3·d_a)·d_a
    + L_a · [2·1500·(4·d_a² + 2·d_a·F_a) + 4·1500²·d_a]         (projections, FFN, bidirectional attention)
    + projector 2·750·d_a·h

Language model, T tokens per sample, L layers, hidden h, q = heads·head_dim, kv = KV heads·head_dim, FFN I::

    forward   2·T·L·(h·q + 2·h·kv + q·h + 3·h·I) + attention L·4·T²·q·c + lm_head 2·T_logits·h·V
    backward  the same matmuls for input gradients only (frozen weights get no weight gradient), except layer 0's
              q/k/v projections, whose input (token and audio embeddings) needs no gradient; attention 2× forward
    LoRA      rank r on a projection in→out: forward 2·T·r·(in+out); backward 4·T·r·(in+out) (2 weight grads,
              2 input grads; layer 0's q/k/v A needs no input grad)

``c`` = 1/2 for causal attention (the work a causal kernel must do; ``attention="causal"``, used for MFU), 1 to
count masked-out products too (``attention="full"``, what eager attention executes). Tested against torch's
``FlopCounterMode`` on the tiny model with eager attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Attention = Literal["causal", "full"]
FRAMES, MEL_FRAMES, TOKENS_PER_WINDOW = 1500, 3000, 750


@dataclass(frozen=True)
class Arch:
    hidden: int
    layers: int
    q_dim: int  # heads · head_dim
    kv_dim: int  # kv heads · head_dim
    intermediate: int
    vocab: int
    audio_d: int
    audio_layers: int
    audio_ffn: int
    mel_bins: int

    @classmethod
    def from_config(cls, config) -> Arch:
        t, a = config.text_config, config.audio_config
        head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
        return cls(
            hidden=t.hidden_size,
            layers=t.num_hidden_layers,
            q_dim=t.num_attention_heads * head_dim,
            kv_dim=t.num_key_value_heads * head_dim,
            intermediate=t.intermediate_size,
            vocab=t.vocab_size,
            audio_d=a.d_model,
            audio_layers=a.encoder_layers,
            audio_ffn=a.encoder_ffn_dim,
            mel_bins=a.num_mel_bins,
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each language-model layer's matmuls."""
        h = self.hidden
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, self.intermediate),
            "up_proj": (h, self.intermediate),
            "down_proj": (self.intermediate, h),
        }


LORA_PROJECTIONS = {"q": ("q_proj",), "qkvo": ("q_proj", "k_proj", "v_proj", "o_proj")}


def audio_flops(arch: Arch, windows: int) -> int:
    """Audio tower + projector, forward only."""
    d = arch.audio_d
    conv = 2 * MEL_FRAMES * 3 * arch.mel_bins * d + 2 * FRAMES * 3 * d * d
    layer = 2 * FRAMES * (4 * d * d + 2 * d * arch.audio_ffn) + 4 * FRAMES * FRAMES * d
    projector = 2 * TOKENS_PER_WINDOW * d * arch.hidden
    return windows * (conv + arch.audio_layers * layer + projector)


def _attention(arch: Arch, queries: int, keys: float) -> float:
    return arch.layers * 4 * queries * keys * arch.q_dim


def _causal_keys(tokens: int, past: int, attention: Attention) -> float:
    """Keys per query, averaged, for ``tokens`` new queries after ``past`` cached ones."""
    return past + (tokens / 2 if attention == "causal" else tokens)


def lm_forward_flops(
    arch: Arch,
    tokens: int,
    logit_tokens: int,
    lora: str | None = None,
    rank: int = 8,
    past: int = 0,
    attention: Attention = "causal",
) -> float:
    """Language-model forward over ``tokens`` new tokens (after ``past`` cached ones), logits at ``logit_tokens``."""
    proj = arch.projections()
    matmul = 2 * tokens * arch.layers * sum(i * o for i, o in proj.values())
    lora_f = 0 if lora is None else 2 * tokens * arch.layers * sum(rank * sum(proj[p]) for p in LORA_PROJECTIONS[lora])
    attn = _attention(arch, tokens, _causal_keys(tokens, past, attention))
    return matmul + lora_f + attn + 2 * logit_tokens * arch.hidden * arch.vocab


def lm_backward_flops(
    arch: Arch, tokens: int, logit_tokens: int, lora: str, rank: int = 8, attention: Attention = "causal"
) -> float:
    """Backward of a LoRA-trained language model (input gradients through frozen weights, LoRA weight gradients)."""
    proj = arch.projections()
    adapted = LORA_PROJECTIONS[lora]
    per_layer = sum(i * o for i, o in proj.values())
    first_layer_inputs = ("q_proj", "k_proj", "v_proj")
    first_layer_skip = sum(i * o for p, (i, o) in proj.items() if p in first_layer_inputs)
    matmul = 2 * tokens * (arch.layers * per_layer - first_layer_skip)
    lora_f = 0
    for p in adapted:  # dB weight, dB input, dA weight, dA input (none in layer 0's q/k/v: embeddings need no grad)
        i, o = proj[p]
        lora_f += 2 * tokens * rank * (2 * arch.layers * (i + o) - (i if p in first_layer_inputs else 0))
    # attention: dP, dV, dQ, dK = 2× forward; layer 0 skips dK/dV when k/v carry no LoRA (their input needs no grad)
    attn_fwd_layer = _attention(arch, tokens, _causal_keys(tokens, 0, attention)) / arch.layers
    first = 2 * attn_fwd_layer if lora == "qkvo" else attn_fwd_layer
    attn = 2 * attn_fwd_layer * (arch.layers - 1) + first
    return matmul + lora_f + attn + 2 * logit_tokens * arch.hidden * arch.vocab


def train_step_flops(
    arch: Arch,
    seq_len: int,
    windows: int,
    batch: int,
    lora: str,
    rank: int = 8,
    logit_tokens: int | None = None,
    attention: Attention = "causal",
) -> float:
    """One optimizer step over ``batch`` samples of ``seq_len`` tokens and ``windows`` audio windows each.

    ``logit_tokens``: positions per sample whose logits are computed (default: all ``seq_len``).
    """
    logits = seq_len if logit_tokens is None else logit_tokens
    per_sample = (
        audio_flops(arch, windows)
        + lm_forward_flops(arch, seq_len, logits, lora, rank, attention=attention)
        + lm_backward_flops(arch, seq_len, logits, lora, rank, attention=attention)
    )
    return batch * per_sample


def prefix_eval_flops(
    arch: Arch,
    prefix_len: int,
    windows: int,
    suffix_lens: Sequence[int],
    attention: Attention = "causal",
    chunk: int = 0,
) -> float:
    """One recording, prefix reuse: audio once, prefix prefill once in chunks of ``chunk`` tokens (0: at once; no
    logits), the suffixes packed into one sequence on the cached prefix, logits at each suffix's last token.

    Packed attention: each suffix token needs the prefix and its own earlier tokens (``causal``); a masked kernel
    executes every packed token against every key (``full``)."""
    step = chunk if chunk > 0 else prefix_len
    prefill = sum(
        lm_forward_flops(arch, min(step, prefix_len - s), 0, past=s, attention=attention)
        for s in range(0, prefix_len, step)
    )
    packed = sum(suffix_lens)
    if attention == "full":
        suffixes = lm_forward_flops(arch, packed, len(suffix_lens), past=prefix_len, attention="full")
    else:
        keys = sum(n * (prefix_len + n / 2) for n in suffix_lens)
        no_attn = lm_forward_flops(arch, packed, len(suffix_lens), past=0, attention="causal")
        suffixes = no_attn - _attention(arch, packed, packed / 2) + arch.layers * 4 * keys * arch.q_dim
    return audio_flops(arch, windows) + prefill + suffixes


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s ÷ the measured peak."""
    return flops / seconds / peak_flops_per_s
