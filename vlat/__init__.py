"""vlat: Partial YaRN and Virtual Longform Audio Training for long-form audio understanding.

Implements arXiv 2510.15231 on stock Hugging Face Qwen2-Audio: an audio-only RoPE extension
(:mod:`vlat.rope`), a long-audio input pipeline (:mod:`vlat.audio.decode`, :mod:`vlat.data.prompts`) and LoRA
fine-tuning with virtual audio lengths.
"""

__version__ = "0.1.0"

__all__ = ["AskSettings", "LongAudioQA"]


def __getattr__(name: str):
    """``vlat.LongAudioQA`` / ``vlat.AskSettings`` (:mod:`vlat.qa`), imported on first use."""
    if name in __all__:
        from vlat import qa

        return getattr(qa, name)
    raise AttributeError(f"module 'vlat' has no attribute {name!r}")
