"""Audio-only RoPE extension (Partial PI / Partial YaRN) and whole-context baselines on stock Qwen2-Audio.

>>> from vlat.rope import AudioRopeConfig, apply_audio_rope
>>> apply_audio_rope(model, AudioRopeConfig(method="partial_yarn", original_audio_tokens=750, cutoff_dim=32,
...                                         temperature=1.2))
>>> apply_audio_rope(model, AudioRopeConfig(method="vanilla"))  # back to exactly stock behaviour
"""

from vlat.audio.tokens import AudioTimes
from vlat.rope.config import METHODS, AudioRopeConfig
from vlat.rope.patch import (
    apply_audio_compression,
    apply_audio_rope,
    current_compression,
    current_config,
    find_audio_model,
    largest_positions,
    plan_chunked_prefill,
    set_virtual_audio_tokens,
    warn_if_beyond_context,
)
from vlat.rope.positions import raw_positions, warp_positions, whole_factor

__all__ = [
    "METHODS",
    "AudioTimes",
    "AudioRopeConfig",
    "apply_audio_compression",
    "apply_audio_rope",
    "current_compression",
    "current_config",
    "find_audio_model",
    "largest_positions",
    "plan_chunked_prefill",
    "warn_if_beyond_context",
    "raw_positions",
    "set_virtual_audio_tokens",
    "warp_positions",
    "whole_factor",
]
