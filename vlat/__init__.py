"""vlat: Partial YaRN and Virtual Longform Audio Training for long-form audio understanding.

Implements arXiv 2510.15231 on stock Hugging Face Qwen2-Audio: an audio-only RoPE extension
(:mod:`vlat.rope`), a long-audio input pipeline (:mod:`vlat.audio`, :mod:`vlat.prompts`) and LoRA
fine-tuning with virtual audio lengths.
"""

__version__ = "0.1.0"
