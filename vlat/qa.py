"""Free-form questions about one long recording: encode and prefill it once, then answer question after question.

``LongAudioQA(model, adapter).ask(path, question)``; ``ask.py`` is its command line. The recording is decoded,
encoded (the audio tower, 30-s windows a few at a time) and its prompt prefix (chat header and audio) prefilled
once, in chunks, into one KV cache (:mod:`vlat.evaluation.prefix`); every question continues from that copy and the
cache is cropped back to the prefix afterwards, so follow-up questions cost only their own tokens.

The audio RoPE extension comes from the adapter's record of how it was trained (:mod:`vlat.training.adapter_record`),
unless set explicitly; a base model without an adapter gets Partial PI (§4) when the recording is longer than the
model's native window and vanilla positions within it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vlat.audio.decode import seconds_to_tokens
from vlat.data.prompts import SYSTEM_PROMPT, chat_prompt_ids, encode_recording, end_of_turn_id
from vlat.errors import BadSampleError, ConfigError
from vlat.models import family_of_model, family_of_processor
from vlat.rope import AudioRopeConfig, apply_audio_compression, apply_audio_rope
from vlat.training.adapter_record import base_fingerprint, fingerprint_mismatch, name_mismatch, training_of

METHODS = ("auto", "vanilla", "partial_pi", "partial_yarn", "whole_pi", "whole_yarn")
QUESTION_TOKENS = 1024  # KV-cache room reserved behind the prefix for a question, beside its answer


@dataclass(frozen=True)
class AskSettings:
    """How a recording is heard: the audio RoPE extension and compression (None: from the adapter, else defaults)."""

    rope_method: str = "auto"  # auto: partial_pi beyond the native window, vanilla within it (no adapter record)
    original_audio_seconds: float | None = None  # None: the adapter's, else the family's native window
    cutoff_dim: int | None = None
    temperature: float | None = None  # attention temperature of Partial YaRN (not the sampling temperature)
    audio_compression: str | None = None

    def validate(self) -> None:
        if self.rope_method not in METHODS:
            raise ConfigError(f"rope_method: {self.rope_method!r} is not one of {', '.join(METHODS)}")
        if self.original_audio_seconds is not None and not self.original_audio_seconds > 0:
            raise ConfigError(f"original_audio_seconds: {self.original_audio_seconds} is not positive")
        if self.cutoff_dim is not None and self.cutoff_dim < 0:
            raise ConfigError(f"cutoff_dim: {self.cutoff_dim} is negative")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"temperature: {self.temperature} is not positive")


def resolve_settings(
    given: AskSettings, recorded: dict | None, seconds: float, native_seconds: float = 30.0
) -> tuple[AskSettings, str]:
    """The settings for a recording of ``seconds``: what was given, else the adapter's record, else the defaults
    (the window: the model family's ``native_seconds``, 30 s on Qwen2-Audio); and a sentence saying what was chosen
    and why."""
    recorded = recorded or {}
    pick = lambda name, default: next(  # noqa: E731
        v for v in (getattr(given, name), recorded.get(name), default) if v is not None
    )
    window = float(pick("original_audio_seconds", native_seconds))
    method = given.rope_method
    if method == "auto":
        if recorded.get("rope_method"):
            method, why = recorded["rope_method"], "as the adapter was trained"
        elif seconds > window:
            method, why = "partial_pi", f"the recording ({seconds:.0f} s) is longer than the {window:g}-s window"
        else:
            method, why = "vanilla", f"the recording ({seconds:.0f} s) fits the {window:g}-s window"
    else:
        why = "as asked"
    out = AskSettings(
        rope_method=method,
        original_audio_seconds=window,
        cutoff_dim=int(pick("cutoff_dim", 0)),
        temperature=float(pick("temperature", 1.0)),
        audio_compression=str(pick("audio_compression", "none")),
    )
    return out, f"audio RoPE {method} from a {window:g}-s window ({why}); audio compression {out.audio_compression}"


@dataclass
class Recording:
    """One recording, encoded and prefilled: its prefix's KV cache, shared by every question."""

    path: str
    seconds: float
    settings: AskSettings
    chose: str  # the sentence of :func:`resolve_settings`
    prefix_ids: list[int]
    cache: object  # transformers Cache holding the prefix
    capacity: int
    rope: AudioRopeConfig  # installed again before each question (another recording may have changed it)


class LongAudioQA:
    """A model (and optionally a LoRA adapter) that answers free-form questions about long recordings.

    Args:
        model: a Qwen2-Audio checkpoint (hub id or directory).
        adapter: a PEFT adapter directory saved by ``train.py`` (``<name>-adapter/``) or any PEFT adapter.
        settings: RoPE extension and compression; unset fields come from the adapter's record, then defaults.
        allow_other_base: use an adapter recorded for another base model deliberately.
    """

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        settings: AskSettings = AskSettings(),
        *,
        system_prompt: str = SYSTEM_PROMPT,
        dtype: str = "auto",
        attn_implementation: str = "auto",
        allow_other_base: bool = False,
        progress: bool = True,
    ):
        from vlat.models.loading import check_model_source, load_model, load_processor

        settings.validate()
        check_model_source(model, "model")
        self.recorded = None
        if adapter is not None:
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise ConfigError(f"adapter: no PEFT adapter at {adapter} (expected adapter_config.json)")
            problem = name_mismatch(adapter, model)
            if problem and not allow_other_base:
                raise ConfigError(f"adapter {adapter}: {problem} (pass allow_other_base to use it deliberately)")
            self.recorded = training_of(adapter)
        self.settings, self.system_prompt, self.progress = settings, system_prompt, progress
        self.processor = load_processor(model)
        family = family_of_processor(self.processor)
        if system_prompt != SYSTEM_PROMPT and not family.system_turn:
            raise ConfigError(f"system_prompt: {family.name}'s chat has no system turn next to audio")
        base = load_model(model, dtype, attn_implementation)
        if adapter is not None:
            problem = fingerprint_mismatch(adapter, base_fingerprint(base))
            if problem and not allow_other_base:
                raise ConfigError(f"adapter {adapter}: {problem} (pass allow_other_base to use it deliberately)")
            from peft import PeftModel

            base = PeftModel.from_pretrained(base, adapter)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = base.to(self.device).eval()
        self.family = family_of_model(self.model)
        self.prefills = 0  # prefixes prefilled so far (one per recording)

    # -- the recording ---------------------------------------------------------------------------------------------

    def _bar(self, desc: str, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="", disable=not self.progress, leave=False)

    @torch.no_grad()
    def listen(self, audio: str | Path | np.ndarray, max_new_tokens: int = 256) -> Recording:
        """Decode, encode and prefill a recording once (a file path, or a 16-kHz waveform)."""
        from vlat.evaluation.prefix import encode_audio, prefill

        name = str(audio) if not isinstance(audio, np.ndarray) else "waveform"
        with self._bar(f"decoding {Path(name).name}", 1) as bar:
            enc = encode_recording(self.processor, audio, name=name)
            bar.update(1)
        seconds = float(enc.feature_mask.sum()) * self.processor.feature_extractor.hop_length
        seconds /= self.processor.feature_extractor.sampling_rate
        settings, chose = resolve_settings(self.settings, self.recorded, seconds, self.family.native_seconds)
        rope = AudioRopeConfig(
            settings.rope_method,
            original_audio_tokens=seconds_to_tokens(
                settings.original_audio_seconds, self.processor.feature_extractor, self.family
            ),
            cutoff_dim=settings.cutoff_dim if settings.rope_method == "partial_yarn" else 0,
            temperature=settings.temperature if settings.rope_method == "partial_yarn" else 1.0,
        )
        apply_audio_rope(self.model, rope)
        apply_audio_compression(self.model, settings.audio_compression)
        windows = len(enc.features)
        with self._bar("encoding audio (30-s windows)", windows) as bar:
            tokens = encode_audio(
                self.model, enc.features, enc.feature_mask, on_windows=lambda done, _: bar.update(done - bar.n)
            )
        prefix, _ = chat_prompt_ids(self.processor, len(tokens), "", self.system_prompt)
        capacity = len(prefix) + QUESTION_TOKENS + max_new_tokens
        with self._bar("prefilling", len(prefix)) as bar:
            cache = prefill(self.model, prefix, tokens, capacity, on_chunk=lambda done, _: bar.update(done - bar.n))
        self.prefills += 1
        return Recording(name, seconds, settings, chose, prefix, cache, capacity, rope)

    # -- questions -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def ask(
        self,
        recording: Recording | str | Path,
        question: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        streamer=None,
    ) -> str:
        """The answer to ``question`` (greedy with ``temperature`` 0, else sampled), continuing the recording's
        prefilled prefix; ``streamer``: a ``transformers`` streamer (``TextStreamer``) fed token by token."""
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        from vlat.evaluation.prefix import _eos_ids, _repetition_penalty, _Tail

        check_generation(question, max_new_tokens, temperature, top_p)
        if not isinstance(recording, Recording):
            recording = self.listen(recording, max_new_tokens)
        _, suffix = chat_prompt_ids(self.processor, 0, question, self.system_prompt)
        L = len(recording.prefix_ids)
        if L + len(suffix) + max_new_tokens > recording.capacity:
            raise ConfigError(
                f"question: {len(suffix)} tokens with max_new_tokens {max_new_tokens} exceed the room reserved behind "
                f"the recording ({recording.capacity - L} tokens): shorten it, or listen() with a larger max_new_tokens"
            )
        apply_audio_rope(self.model, recording.rope)
        apply_audio_compression(self.model, recording.settings.audio_compression)
        processors = LogitsProcessorList()
        gen = self.model.generation_config
        penalty = _repetition_penalty(self.model)
        if penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty))
        if temperature > 0:  # as generate(do_sample=True) would: temperature, the checkpoint's top_k, top-p
            processors.append(TemperatureLogitsWarper(temperature))
            if getattr(gen, "top_k", None):
                processors.append(TopKLogitsWarper(int(gen.top_k)))
            processors.append(TopPLogitsWarper(top_p))
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        eos = _eos_ids(self.model) | {end_of_turn_id(self.processor)}  # the chat turn's end stops too
        tail = _Tail(L, self.device)
        history = list(recording.prefix_ids) + list(suffix)
        reply: list[int] = []
        try:
            hidden = tail.forward(
                self.model, recording.cache, list(suffix), [0] * len(suffix), list(range(L, L + len(suffix)))
            )
            while True:
                logits = self.model.get_output_embeddings()(hidden[-1:]).float()
                logits = processors(torch.tensor([history], device=self.device), logits)
                if temperature > 0:
                    probs = logits.softmax(-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    token = int(logits.argmax(-1))
                reply.append(token)
                history.append(token)
                if token in eos:
                    break
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if len(reply) >= max_new_tokens:
                    break
                hidden = tail.forward(self.model, recording.cache, [token], [0], [L + len(suffix) + len(reply) - 1])
        finally:
            tail.reset(recording.cache)  # back to the prefix: the next question starts from the same copy
            if streamer is not None:
                streamer.end()
        self.last_reply_ids = reply
        return self.processor.tokenizer.decode(reply, skip_special_tokens=True)


def check_generation(question: str, max_new_tokens: int, temperature: float, top_p: float) -> None:
    """One-line errors for a question and generation options, before anything runs."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("question: empty; ask something about the recording")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: {max_new_tokens} must be at least 1")
    if temperature < 0:
        raise ConfigError(f"temperature: {temperature} must be >= 0 (0: greedy)")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p: {top_p} must be in (0, 1]")


def check_audio_file(path: str | Path) -> float:
    """The recording's duration in seconds from its header, or a one-line error naming the file (before any model
    loads)."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise BadSampleError(str(path), "missing_audio", "no such file")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise BadSampleError(str(path), "corrupt_audio", f"cannot decode audio ({e})") from e
    return float(info.frames) / float(info.samplerate)


def with_overrides(settings: AskSettings, **changes) -> AskSettings:
    """``settings`` with the given fields replaced (None: keep)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


__all__ = ["AskSettings", "LongAudioQA", "Recording", "check_audio_file", "check_generation", "resolve_settings"]
