"""Long-audio loading and 30-second windowing for Qwen2-Audio.

The stock processor pads/truncates every audio item to one 30-s window (3000 mel frames), and the encoder rejects
anything else. Here a recording of any length is decoded (soundfile), downmixed, resampled (soxr) and split into
consecutive windows of the feature extractor's own ``chunk_length``; each window becomes one row of
``input_features`` with its true length in ``feature_attention_mask``, so a 75-s file gives 750 + 750 + 375 tokens.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from vlat.errors import BadSampleError

AudioSource = Any  # str | PathLike | bytes | (array, rate) | {"bytes": ..., "path": ...} (datasets Audio(decode=False))
SAMPLE_RATE = 16000


def _describe(src: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, str | os.PathLike):
        return str(src)
    if isinstance(src, dict) and src.get("path"):
        return str(src["path"])
    return f"<{type(src).__name__} audio>"


def load_audio(
    src: AudioSource, sampling_rate: int = SAMPLE_RATE, *, max_seconds: float | None = None, name: str | None = None
) -> np.ndarray:
    """Decode ``src`` to a float32 mono waveform at ``sampling_rate``.

    Accepts a path (any format soundfile reads: wav, flac, ogg, mp3), encoded bytes, an ``(array, rate)`` pair
    (array ``(samples,)`` or ``(samples, channels)``), or a ``datasets`` audio dict with ``bytes`` or ``path``.
    Raises :class:`BadSampleError` naming the file for unreadable, empty, NaN or over-long audio.
    """
    label = _describe(src, name)
    if isinstance(src, dict):
        src = src.get("bytes") or src.get("path")
        if src is None:
            raise BadSampleError(label, "missing_audio", "audio entry has neither bytes nor path")
    if isinstance(src, tuple):
        data, rate = np.asarray(src[0]), int(src[1])
    else:
        handle = io.BytesIO(src) if isinstance(src, bytes | bytearray) else Path(src)
        if isinstance(handle, Path) and not handle.is_file():
            try:
                os.stat(handle)
                why = "not a file"
            except OSError as e:  # missing, a symlink loop, no permission: the system's own words
                why = e.strerror
            raise BadSampleError(label, "missing_audio", f"cannot open audio file ({why})")
        try:
            data, rate = sf.read(handle, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            raise BadSampleError(label, "corrupt_audio", f"cannot decode audio ({e})") from e
    data = data.astype(np.float32, copy=False)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.ndim != 1:
        raise BadSampleError(label, "corrupt_audio", f"expected (samples,) or (samples, channels), got {data.shape}")
    if data.size == 0:
        raise BadSampleError(label, "empty_audio", "audio has zero samples")
    if not np.isfinite(data).all():
        raise BadSampleError(label, "nan_audio", "audio contains NaN or infinite samples")
    if max_seconds is not None and data.size / rate > max_seconds:
        raise BadSampleError(
            label, "too_long", f"audio is {data.size / rate:.1f} s, over max_audio_seconds={max_seconds}"
        )
    if rate != sampling_rate:
        data = soxr.resample(data, rate, sampling_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(data)


def audio_tokens_for_frames(frames: torch.Tensor | int, family=None) -> torch.Tensor:
    """Audio tokens a window of ``frames`` mel frames becomes in ``family``'s encoder (:mod:`vlat.models`; default
    Qwen2-Audio: 3000 frames -> 750)."""
    return _family(family).tokens_for_frames(frames)


def tokens_per_second(feature_extractor, family=None) -> float:
    """Audio tokens per second of audio (25 on Qwen2-Audio and Audio Flamingo 3, 12.5 on Voxtral)."""
    return _family(family).tokens_per_second(feature_extractor)


def seconds_to_tokens(seconds: float, feature_extractor, family=None) -> int:
    """Convert a window given in seconds (CLI/YAML convenience) to audio tokens, e.g. 30 s -> 750 (Voxtral: 375)."""
    return int(round(seconds * tokens_per_second(feature_extractor, family)))


def _family(family):
    from vlat.models import QWEN2_AUDIO

    return family or QWEN2_AUDIO


def featurize(audio: np.ndarray, feature_extractor, whole_recording: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``audio`` into consecutive windows and compute log-mel features.

    Returns ``input_features`` (W, mel, frames) and ``feature_attention_mask`` (W, frames) where each window is
    padded to the extractor's full window and the mask marks its true length.

    ``whole_recording`` (Voxtral's processor): one extractor call on the recording padded to whole windows (one
    log-mel normalisation for the recording), cut into windows afterwards; every window counts whole (its encoder
    takes no mask), so the mask is all ones.

    The extractor runs on one window at a time: its output is identical to one call on all windows (each window is
    normalised by its own maximum), while the STFT's intermediates stay the size of one window instead of growing
    with the recording (a 2-minute recording featurises ~25% faster, and two DataLoader workers contend less for
    memory bandwidth; ``docs/benchmarks.md``).
    """
    window = feature_extractor.n_samples  # chunk_length * sampling_rate
    n_windows = max(1, math.ceil(len(audio) / window))
    if whole_recording:
        feats = feature_extractor(
            audio,
            sampling_rate=feature_extractor.sampling_rate,
            padding=True,
            truncation=False,
            pad_to_multiple_of=window,
            return_tensors="pt",
        )["input_features"]  # (1, mel, W * frames)
        feats = feats.reshape(feats.shape[1], n_windows, -1).transpose(0, 1).contiguous()
        return feats, torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.long)
    outs = [
        feature_extractor(
            [audio[i * window : (i + 1) * window]],
            sampling_rate=feature_extractor.sampling_rate,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        for i in range(n_windows)
    ]
    return torch.cat([o["input_features"] for o in outs]), torch.cat([o["attention_mask"] for o in outs]).long()
