"""Offline fixtures: a tiny random Qwen2-Audio checkpoint, a tiny one trained to hear (:mod:`.base_model`) and a
synthetic long-audio MCQA dataset.

All are written to disk in the same formats real users bring (a Hugging Face checkpoint directory, audio files
plus a JSONL table), so tests exercise the real loading code without any network access.
"""

from vlat.testing.synth_data import MARKERS, TONES, SynthConfig, decode_events, write_synth_dataset
from vlat.testing.tiny_model import TinyModelConfig, write_tiny_model

__all__ = [
    "MARKERS",
    "TONES",
    "SynthConfig",
    "TinyModelConfig",
    "decode_events",
    "write_synth_dataset",
    "write_tiny_model",
]
