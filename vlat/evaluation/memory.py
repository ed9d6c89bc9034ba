"""Evaluation memory planning: what one recording needs on the device, from the model's config alone.

Weights are already resident when this is asked, so the need is what :mod:`vlat.evaluation.prefix` allocates on top:

- the KV cache, one buffer of ``tokens`` = prefix + reserved question tokens:
  ``2 (K, V) x layers x kv_heads x head_dim x bytes`` per token;
- the largest working set of one forward: a prefill chunk of ``c`` tokens (``~ c (8 h + 3 I)`` activations of the
  decoder layer, plus its attention mask ``c x tokens`` in fp32, or the eager score matrix ``c x heads x tokens``),
  or the audio tower on its window batch (``W x 1500 (6 d + 2 F)``), plus the prefix embeddings (``2 x L x h``).

It is an estimate with the exact KV term (the cache buffer's size, tested by counting it) and a conservative
working term; the decision uses the device's free memory plus what PyTorch's allocator holds unused.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlat.training.device_memory import size


@dataclass(frozen=True)
class MemoryNeed:
    tokens: int  # KV-cache tokens reserved
    kv_cache: int  # bytes
    working: int  # bytes

    @property
    def total(self) -> int:
        return self.kv_cache + self.working

    def describe(self) -> str:
        return (
            f"{size(self.total)} (KV cache {size(self.kv_cache)} for {self.tokens:,} tokens "
            f"+ {size(self.working)} working memory)"
        )


def kv_bytes_per_token(text_config, dtype_bytes: int) -> int:
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    return 2 * text_config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def recording_need(
    config,
    dtype_bytes: int,
    prefix_tokens: int,
    reserved_tokens: int,
    prefill_chunk: int,
    windows: int,
    attn_implementation: str = "sdpa",
) -> MemoryNeed:
    """Bytes beyond the weights to evaluate one recording (``config``: a Qwen2-Audio config)."""
    from vlat.evaluation.prefix import ENCODE_WINDOWS

    text, audio = config.text_config, config.audio_config
    tokens = prefix_tokens + reserved_tokens
    kv = tokens * kv_bytes_per_token(text, dtype_bytes)
    c = min(prefill_chunk if prefill_chunk > 0 else prefix_tokens, prefix_tokens)
    h, inter, heads = text.hidden_size, text.intermediate_size, text.num_attention_heads
    layer = c * (8 * h + 3 * inter) * dtype_bytes
    eager = attn_implementation == "eager"
    layer += c * heads * tokens * (2 * dtype_bytes + 4) if eager else c * tokens * 4
    w, frames = min(windows, ENCODE_WINDOWS), audio.max_source_positions
    tower = w * frames * (6 * audio.d_model + 2 * audio.encoder_ffn_dim) * dtype_bytes
    if eager:
        tower += w * audio.encoder_attention_heads * frames * frames * (2 * dtype_bytes + 4)
    return MemoryNeed(tokens, kv, max(layer, tower) + 2 * prefix_tokens * h * dtype_bytes)
