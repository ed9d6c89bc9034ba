"""Voxtral (Mistral AI, arXiv 2507.13264): Whisper-large-v3 encoder whose output is regrouped four frames per token,
12.5 audio tokens/s (375 per 30-s chunk, every chunk whole: the last one is padded with silence and the encoder
takes no mask), a Llama-architecture decoder; audio up to about 40 minutes fits its 32k context.

Its processor differs from the Whisper-template families in two ways this module owns:

- features: the recording is padded to whole 30-s chunks and featurised in one extractor call (one log-mel
  normalisation for the whole recording), then cut into chunks (``VoxtralProcessor._retrieve_input_features``);
- prompts: rendered by mistral-common's instruct tokenizer (``MistralCommonBackend``), not a Jinja template:
  ``<s>[INST][BEGIN_AUDIO][AUDIO]...`` + each text chunk encoded on its own + ``[/INST]``. Its tokenizer (v7) takes
  no system turn next to audio, so the system prompt is not rendered.
"""

from __future__ import annotations

import base64
import functools
import io

import torch

from vlat.models.family import ModelFamily

FRAMES_PER_TOKEN = 4  # encoder frames (after its stride-2 conv) concatenated into one projector input


@functools.cache
def _silence_base64() -> str:
    """A 0.1-s silent WAV: stands in for the recording when rendering the chat (its run becomes one 375-token chunk,
    replaced by the recording's own count)."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


class VoxtralFamily(ModelFamily):
    def run_tower(self, inner, features: torch.Tensor, feature_mask: torch.Tensor) -> torch.Tensor:
        cfg = inner.config.audio_config
        if cfg.intermediate_size != FRAMES_PER_TOKEN * cfg.hidden_size:
            raise ValueError(
                f"Voxtral: projector input {cfg.intermediate_size} is not {FRAMES_PER_TOKEN} encoder frames"
            )
        hidden = inner.audio_tower(features).last_hidden_state  # (W, 1500, d): the encoder takes no mask
        return hidden.reshape(len(features), -1, cfg.intermediate_size)  # (W, 375, 4d): as get_audio_features

    def tokens_for_frames(self, frames: torch.Tensor | int) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        return ((frames - 1) // 2 + 1) // FRAMES_PER_TOKEN  # 3000 frames -> 1500 encoder frames -> 375 tokens

    def user_text_ids(self, tokenizer, text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids  # Tekken never reads control tokens from text

    def chat_parts(
        self, processor, n_audio: int, before_question: str, system_prompt: str
    ) -> tuple[list[int], list[int]]:
        tok = processor.tokenizer
        content = [{"type": "audio", "base64": _silence_base64()}]
        if before_question:
            content.append({"type": "text", "text": before_question})
        ids = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        audio_id = tok.convert_tokens_to_ids(processor.audio_token)
        end_inst = tok.convert_tokens_to_ids("[/INST]")
        run = [i for i, t in enumerate(ids) if t == audio_id]
        if not run or run != list(range(run[0], run[-1] + 1)) or ids[-1] != end_inst:
            raise ValueError("Voxtral chat: expected one [AUDIO] run and a user turn ending in [/INST]")
        return [*ids[: run[0]], *([audio_id] * n_audio), *ids[run[-1] + 1 : -1]], ids[-1:]

    def published_config(self, num_layers: int | None = None, audio_layers: int | None = None):
        # mistralai/Voxtral-Mini-3B-2507: transformers' VoxtralConfig defaults are that checkpoint's (a Llama decoder
        # 3072 wide, 30 layers, 32 heads / 8 KV heads of 128, vocab 131,072, rope theta 1e8; the Whisper-large-v3
        # encoder) and its [AUDIO] token is 24 (VoxtralProcessor)
        from transformers import VoxtralConfig

        text = {"num_hidden_layers": num_layers} if num_layers else {}
        audio = {"model_type": "voxtral_encoder"} | ({"num_hidden_layers": audio_layers} if audio_layers else {})
        return VoxtralConfig(audio_token_id=24, text_config=text, audio_config=audio)


VOXTRAL = VoxtralFamily(
    name="Voxtral",
    model_type="voxtral",
    model_class="VoxtralForConditionalGeneration",
    inner_class="VoxtralModel",
    processor_class="VoxtralProcessor",
    feature_mask_key=None,
    native_seconds=2400.0,
    published_id="mistralai/Voxtral-Mini-3B-2507",
    end_of_turn="</s>",
    whole_recording_features=True,
    requires=("mistral_common", "voxtral"),  # its tokenizer: transformers' MistralCommonBackend
    system_turn=False,
)
