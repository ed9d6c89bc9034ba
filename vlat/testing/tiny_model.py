"""A complete, randomly initialised checkpoint of tiny size, built offline, for each model family.

Qwen2-Audio (the default): the directory loads with the stock ``Qwen2AudioForConditionalGeneration.from_pretrained``
and ``AutoProcessor.from_pretrained`` — the code path real users take with ``Qwen/Qwen2-Audio-7B-Instruct``.
Only sizes differ from the published config: the architecture classes, the 128-bin Whisper feature extractor,
the 30-s / 3000-frame audio window (750 audio tokens) and the special tokens are the real ones.

Audio Flamingo 3 (``family="audioflamingo3"``): ``AudioFlamingo3ForConditionalGeneration`` and
``AudioFlamingo3Processor`` (the same 128-bin extractor and 30-s windows, 750 tokens each, one ``<sound>`` run),
as ``nvidia/audio-flamingo-3-hf`` loads; the chat template renders as the published one (a Qwen2 chat, ``<sound>``
first in a user turn that holds audio).

Voxtral (``family="voxtral"``): ``VoxtralForConditionalGeneration`` and ``VoxtralProcessor`` with mistral-common's
Tekken tokenizer (``MistralCommonBackend``, the optional ``vlat[voxtral]`` extra) read from a ``tekken.json`` of
byte tokens, the v7 control tokens at their published ranks (``[AUDIO]`` 24, ``[BEGIN_AUDIO]`` 25) and the
published audio section (16 kHz, 12.5 tokens/s, 128 mel bins, 30-s chunks), as ``mistralai/Voxtral-Mini-3B-2507``
loads.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vlat.io import make_staging_dir, publish_dir

# Qwen2-Audio's special tokens, in the order they get ids after the byte vocabulary.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]

# Qwen2-Audio-Instruct's chat template: system / user / assistant turns; each audio item renders as
# "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>" (the processor then expands <|AUDIO|> to one token per frame).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the tiny model. Defaults keep a forward over 10 minutes of audio (15,000 tokens) cheap on CPU."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    audio_d_model: int = 32
    audio_layers: int = 2
    audio_heads: int = 2
    audio_ffn: int = 64
    max_position_embeddings: int = 8192  # as Qwen2-Audio-7B
    rope_theta: float = 10000.0
    # init scale of the text model: 0.02 (the real one) leaves a frozen random LM head with logits too flat for
    # LoRA to move in a smoke run (after the final RMSNorm, |logit| <= sqrt(hidden) * |lm_head row| ~ 1.3)
    initializer_range: float = 0.1
    seed: int = 0


# Qwen2-Audio-7B's ids of its special tokens (the published tokenizer's layout).
REAL_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151646,
    "<|audio_bos|>": 151647,
    "<|audio_eos|>": 151648,
}


# Audio Flamingo 3's: the Qwen2 chat tokens and its audio placeholder, and their ids in nvidia/audio-flamingo-3-hf.
AF3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
AF3_REAL_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<sound>": 151669}

# Rendered as nvidia/audio-flamingo-3-hf renders (transformers' AF3 processor test): a default system turn, and in a user
# turn <sound> first when it holds audio, then its texts, whatever their order in the content list.
AF3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% set audio = namespace(found=False) %}"
    "{% for content in message['content'] %}{% if content['type'] == 'audio' %}{% set audio.found = True %}{% endif %}{% endfor %}"
    "{% if audio.found %}<sound>{% endif %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(
    special_ids: dict[str, int] | None = None,
    corpus: Sequence[str] = (),
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
):
    """A byte-level BPE Qwen2 tokenizer plus the Qwen2-Audio special tokens: right after the vocabulary, or at
    ``special_ids`` (e.g. :data:`REAL_SPECIAL_IDS`; the ids between are unused placeholders).

    Without ``corpus``: the 256 byte tokens and no merges. With it: merges learnt from ``corpus`` by ``tokenizers``'
    BPE trainer (deterministic), so its words become single tokens as in a real vocabulary; any text still encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: i for i, b in enumerate(sorted(byte_chars))}
    merges: list[tuple[str, str]] = []
    if corpus:
        learner = Tokenizer(models.BPE())
        learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        learner.train_from_iterator(
            list(corpus),
            trainers.BpeTrainer(
                vocab_size=len(vocab) + 4096,
                min_frequency=1,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            ),
        )
        learnt = learner.get_vocab()
        vocab |= {t: len(vocab) + i for i, t in enumerate(sorted(set(learnt) - set(vocab), key=learnt.__getitem__))}
        merges = [tuple(m) for m in json.loads(learner.to_str())["model"]["merges"]]  # [left, right] pairs
    if special_ids:
        taken = set(special_ids.values())
        vocab |= {f"<|unused_{i}|>": i for i in range(len(vocab), max(taken)) if i not in taken}
        vocab |= special_ids
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens[1:])})
    tokenizer.add_special_tokens({"pad_token": special_tokens[0]})
    return tokenizer


def _text_config(tokenizer, cfg: TinyModelConfig):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        rms_norm_eps=1e-5,
        initializer_range=cfg.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig()):
    """Random-weight ``Qwen2AudioForConditionalGeneration`` with the given sizes and the tokenizer's special ids."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration

    text = _text_config(tokenizer, cfg)
    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=128,
        encoder_layers=cfg.audio_layers,
        encoder_attention_heads=cfg.audio_heads,
        encoder_ffn_dim=cfg.audio_ffn,
        d_model=cfg.audio_d_model,
        max_source_positions=1500,  # 3000 mel frames = 30 s, as the real encoder
    )
    config = Qwen2AudioConfig(
        audio_config=audio,
        text_config=text,
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    return _random_model(Qwen2AudioForConditionalGeneration, config, cfg.seed)


def build_tiny_af3_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig()):
    """Random-weight ``AudioFlamingo3ForConditionalGeneration`` with the given sizes (as :func:`build_tiny_model`)."""
    from transformers import AudioFlamingo3Config, AudioFlamingo3EncoderConfig, AudioFlamingo3ForConditionalGeneration

    text = _text_config(tokenizer, cfg)
    audio = AudioFlamingo3EncoderConfig(
        num_mel_bins=128,
        num_hidden_layers=cfg.audio_layers,
        num_attention_heads=cfg.audio_heads,
        intermediate_size=cfg.audio_ffn,
        hidden_size=cfg.audio_d_model,
        max_source_positions=1500,  # 3000 mel frames = 30 s, as the real encoder
    )
    config = AudioFlamingo3Config(
        audio_config=audio, text_config=text, audio_token_id=tokenizer.convert_tokens_to_ids("<sound>")
    )
    return _random_model(AudioFlamingo3ForConditionalGeneration, config, cfg.seed)


def build_tiny_voxtral_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig()):
    """Random-weight ``VoxtralForConditionalGeneration`` with the given sizes (as :func:`build_tiny_model`): a Llama
    decoder and the Whisper-style encoder whose projector takes four encoder frames per token."""
    from transformers import LlamaConfig, VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration

    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        rms_norm_eps=1e-5,
        initializer_range=cfg.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    audio = VoxtralEncoderConfig(
        num_mel_bins=128,
        num_hidden_layers=cfg.audio_layers,
        num_attention_heads=cfg.audio_heads,
        hidden_size=cfg.audio_d_model,
        intermediate_size=4 * cfg.audio_d_model,  # also the projector's input: four encoder frames per token
        max_source_positions=1500,  # 3000 mel frames = 30 s, as the real encoder
    )
    config = VoxtralConfig(
        audio_config=audio, text_config=text, audio_token_id=tokenizer.convert_tokens_to_ids("[AUDIO]")
    )
    return _random_model(VoxtralForConditionalGeneration, config, cfg.seed)


def _random_model(model_class, config, seed: int):
    """``model_class(config)`` with seeded random weights, generating until the text config's end of turn."""
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model


def _whisper_features():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30, hop_length=160)


def build_processor(tokenizer):
    from transformers import Qwen2AudioProcessor

    return Qwen2AudioProcessor(feature_extractor=_whisper_features(), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_af3_processor(tokenizer):
    from transformers import AudioFlamingo3Processor

    return AudioFlamingo3Processor(
        feature_extractor=_whisper_features(), tokenizer=tokenizer, chat_template=AF3_CHAT_TEMPLATE
    )


# Tekken's pre-tokenizer pattern (mistral-common's tekken.json files) and the v7 control tokens with audio, at the
# ranks of mistralai/Voxtral-Mini-3B-2507 (VoxtralProcessor fixes [AUDIO] at 24); other ranks are <SPECIAL_n>.
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_CONTROL = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]",
    13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]",
}  # fmt: skip


def tekken_json(num_special: int = 40, vocab_size: int | None = None) -> dict:
    """A Tekken tokenizer file: ``num_special`` control tokens, then the 256 byte tokens, then (to ``vocab_size``, the
    published 131,072 for full-size checkpoints) two- and three-byte tokens in order; Voxtral's audio section."""
    n_vocab = (vocab_size or num_special + 256) - num_special
    every = (bytes(t) for n in (1, 2, 3) for t in itertools.product(range(256), repeat=n))  # bytes, pairs, triples
    pieces = list(itertools.islice(every, n_vocab))
    return {
        "config": {
            "pattern": TEKKEN_PATTERN,
            "num_vocab_tokens": n_vocab,
            "default_vocab_size": num_special + n_vocab,
            "default_num_special_tokens": num_special,
            "version": "v7",
        },
        "vocab": [
            {"rank": i, "token_bytes": base64.b64encode(piece).decode(), "token_str": None}
            for i, piece in enumerate(pieces)
        ],
        "special_tokens": [
            {"rank": i, "token_str": TEKKEN_CONTROL.get(i, f"<SPECIAL_{i}>"), "is_control": True}
            for i in range(num_special)
        ],
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "chunk_length_s": 30.0,
        },
    }


def build_voxtral_tokenizer(real_ids: bool = False):
    """``MistralCommonBackend`` on a :func:`tekken_json` file (``real_ids``: the published 1,000 control tokens and
    131,072-token vocabulary). Needs ``mistral-common`` (``pip install 'vlat[voxtral]'``)."""
    from transformers import MistralCommonBackend

    # the tokenizer reads its file again when saved: the file lives as long as the process
    d = Path(tempfile.mkdtemp(prefix="vlat-tekken-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    (d / "tekken.json").write_text(json.dumps(tekken_json(1000, 131072) if real_ids else tekken_json()))
    return MistralCommonBackend.from_pretrained(d)


def build_voxtral_processor(tokenizer):
    from transformers import VoxtralProcessor

    return VoxtralProcessor(feature_extractor=_whisper_features(), tokenizer=tokenizer)


@dataclass(frozen=True)
class TinyFamily:
    """What the tiny checkpoint of one family is made of."""

    special_tokens: Sequence[str]  # the first is the padding token
    real_ids: dict[str, int]  # the published checkpoint's ids of those tokens
    build_model: Callable  # (tokenizer, TinyModelConfig) -> random-weight generation model
    build_processor: Callable  # tokenizer -> processor
    build_tokenizer: Callable | None = None  # real_ids -> tokenizer; None: the byte-level Qwen2 one with these tokens

    def tokenizer(self, real_ids: bool = False):
        if self.build_tokenizer is not None:
            return self.build_tokenizer(real_ids)
        return build_tokenizer(self.real_ids if real_ids else None, special_tokens=self.special_tokens)


TINY_FAMILIES = {
    "qwen2_audio": TinyFamily(SPECIAL_TOKENS, REAL_SPECIAL_IDS, build_tiny_model, build_processor),
    "audioflamingo3": TinyFamily(AF3_SPECIAL_TOKENS, AF3_REAL_SPECIAL_IDS, build_tiny_af3_model, build_af3_processor),
    "voxtral": TinyFamily(
        tuple(TEKKEN_CONTROL.values()),
        {t: i for i, t in TEKKEN_CONTROL.items()},
        build_tiny_voxtral_model,
        build_voxtral_processor,
        build_voxtral_tokenizer,
    ),
}
FAMILIES = tuple(TINY_FAMILIES)


def _tiny_family(family: str) -> TinyFamily:
    if family not in TINY_FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    return TINY_FAMILIES[family]


def build_tiny(family: str, tokenizer, cfg: TinyModelConfig = TinyModelConfig()):
    """The random-weight tiny model of ``family`` (one of :data:`FAMILIES`) for ``tokenizer``."""
    return _tiny_family(family).build_model(tokenizer, cfg)


def family_tokenizer_and_processor(family: str, real_ids: bool = False):
    """The tokenizer and processor of ``family`` (one of :data:`FAMILIES`); ``real_ids``: the special tokens at the
    published checkpoint's ids."""
    tiny = _tiny_family(family)
    tokenizer = tiny.tokenizer(real_ids)
    return tokenizer, tiny.build_processor(tokenizer)


def write_tiny_model(
    out_dir: str | os.PathLike, cfg: TinyModelConfig = TinyModelConfig(), family: str = "qwen2_audio"
) -> Path:
    """Write the tiny checkpoint of ``family`` (one of :data:`FAMILIES`: weights, configs, tokenizer, processor) to
    ``out_dir`` atomically.

    The directory is assembled next to its destination and renamed into place, so an interrupted run never
    leaves a half-written checkpoint behind. An existing directory is replaced.
    """
    out = Path(out_dir)
    tokenizer, processor = family_tokenizer_and_processor(family)
    model = build_tiny(family, tokenizer, cfg)
    tmp = make_staging_dir(out)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
