"""Configuration of the audio-only RoPE extension (arXiv 2510.15231, Sections 3 and 6; Whole PI / YaRN baselines)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from vlat.errors import ConfigError

Method = Literal["vanilla", "partial_pi", "partial_yarn", "whole_pi", "whole_yarn"]
METHODS: tuple[str, ...] = ("vanilla", "partial_pi", "partial_yarn", "whole_pi", "whole_yarn")


@dataclass(frozen=True)
class AudioRopeConfig:
    """How audio positions are warped.

    Args:
        method: ``vanilla`` (stock RoPE), ``partial_pi`` (audio-only interpolation of every frequency pair),
            ``partial_yarn`` (audio-only, two frequency groups split at ``cutoff_dim``, attention temperature),
            ``whole_pi`` / ``whole_yarn`` (whole-context baselines: Hugging Face ``linear`` / ``yarn`` rope with a
            per-sample factor ``max(1, audio tokens / span)``).
        original_audio_tokens: the audio window the model is familiar with, in audio tokens (750 = 30 s on
            Qwen2-Audio; 3000 = the observed 2-minute window of Section 5.1).
        cutoff_dim: frequency pairs ``i < cutoff_dim`` (high frequencies) keep raw positions; the others are
            interpolated (Section 3.2). 0 = every pair interpolated. Range ``[0, head_dim / 2]``.
        temperature: attention temperature ``t`` on warped audio tokens; cos and sin are scaled by ``1/sqrt(t)``.
        virtual_audio_tokens: set by VLAT during training (Section 6.1): every audio run is mapped onto this many
            positions, stretched or compressed, whatever its real length; a tuple gives each sample of the batch
            its own number.
    """

    method: Method = "partial_pi"
    original_audio_tokens: int = 750
    cutoff_dim: int = 0
    temperature: float = 1.0
    virtual_audio_tokens: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: {self.method!r} is not one of {', '.join(METHODS)}")
        if not (isinstance(self.original_audio_tokens, int) and self.original_audio_tokens > 0):
            raise ConfigError(f"original_audio_tokens: {self.original_audio_tokens!r} must be an integer > 0")
        v = self.virtual_audio_tokens
        if v is not None and not all(isinstance(x, int) and x > 0 for x in (v if isinstance(v, tuple) else (v,))):
            raise ConfigError(
                f"virtual_audio_tokens: {v!r} must be None, an integer > 0 or a tuple of them (one per sample)"
            )
        if isinstance(v, tuple) and not v:
            raise ConfigError("virtual_audio_tokens: an empty per-sample tuple")
        if not (isinstance(self.cutoff_dim, int) and self.cutoff_dim >= 0):
            raise ConfigError(f"cutoff_dim: {self.cutoff_dim!r} must be an integer in [0, head_dim / 2]")
        if not self.temperature > 0:
            raise ConfigError(f"temperature: {self.temperature!r} must be > 0")
        if self.method == "partial_pi" and (self.cutoff_dim != 0 or self.temperature != 1.0):
            raise ConfigError(
                "cutoff_dim/temperature: partial_pi is partial_yarn with cutoff_dim 0 and temperature 1; "
                "use method='partial_yarn' to set them"
            )
        if self.method.startswith(("whole", "vanilla")) and (self.cutoff_dim != 0 or self.temperature != 1.0):
            raise ConfigError(f"cutoff_dim/temperature: only partial_yarn takes them, not {self.method}")

    @property
    def span(self) -> int | tuple[int, ...]:
        """S: the number of positions an audio run is mapped onto (per sample when VLAT draws per sample)."""
        return self.virtual_audio_tokens if self.virtual_audio_tokens is not None else self.original_audio_tokens

    def with_virtual(self, virtual_audio_tokens: int | tuple[int, ...] | None) -> AudioRopeConfig:
        return replace(self, virtual_audio_tokens=virtual_audio_tokens)

    def check_head_dim(self, head_dim: int) -> None:
        if self.cutoff_dim > head_dim // 2:
            raise ConfigError(f"cutoff_dim: {self.cutoff_dim} is outside [0, {head_dim // 2}] (head_dim {head_dim})")
