"""Voxtral (:mod:`vlat.models.voxtral`) through the paths Qwen2-Audio takes, on its tiny offline checkpoint (stock
``VoxtralForConditionalGeneration`` + ``VoxtralProcessor`` with mistral-common's Tekken tokenizer): prompts and
features equal to its stock processor's, audio tokens equal to its stock audio path (375 per whole 30-s chunk),
vanilla bit-identical to the stock forward, audio positions under Partial PI by hand on real chunks, cached decoding
equal to the full forward (train.py / evaluate.py / sweep.py / ask end to end: test_families.py)."""

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vlat.models import VOXTRAL, family_of_checkpoint, family_of_model, forward_kwargs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.seam  # transformers' Voxtral classes and MistralCommonBackend: also on the oldest versions


def tones(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * (300 + 2 * t) * t)).astype(np.float32)


def as_base64(wav: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format="WAV", subtype="FLOAT")  # lossless: the stock path decodes this
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def vx_processor(tiny_voxtral_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_voxtral_model_dir)


def test_the_family_is_read_from_the_checkpoint(tiny_voxtral_model_dir, tiny_voxtral_model, vx_processor):
    from transformers import MistralCommonBackend, VoxtralProcessor

    assert family_of_checkpoint(str(tiny_voxtral_model_dir)) is VOXTRAL
    assert family_of_model(tiny_voxtral_model) is VOXTRAL
    assert isinstance(vx_processor, VoxtralProcessor) and isinstance(vx_processor.tokenizer, MistralCommonBackend)
    # the published layout: [AUDIO] 24, [BEGIN_AUDIO] 25, </s> ends a turn; 12.5 tokens/s
    tok = vx_processor.tokenizer
    assert tiny_voxtral_model.config.audio_token_id == 24 == tok.convert_tokens_to_ids("[AUDIO]")
    assert tok.convert_tokens_to_ids("[BEGIN_AUDIO]") == 25 and tok.convert_tokens_to_ids("</s>") == 2
    assert VOXTRAL.tokens_per_second(vx_processor.feature_extractor) == 12.5
    # the forward takes no mel-frame mask: vlat's batch key is dropped
    kw = forward_kwargs(tiny_voxtral_model, {"feature_attention_mask": torch.ones(1, 4), "input_ids": torch.ones(1, 2)})
    assert set(kw) == {"input_ids"}


def test_prompt_and_features_equal_its_stock_processor(vx_processor):
    """vlat's MCQA prompt of a 75-s recording is token for token what VoxtralProcessor.apply_chat_template makes of the
    same chat (one [AUDIO] run of 3 x 375 tokens: the last chunk padded whole), with identical features (one log-mel
    normalisation over the recording, not per window); the free-form (ask) prompt too, where a typed control token
    stays text."""
    from vlat.data.prompts import INSTRUCTION, build_mcqa_example, chat_prompt_ids, encode_recording, format_question

    question, options = "Which marker is heard?", ["bell", "horn", "chime", "whistle"]
    wav = tones(75)
    ex = build_mcqa_example(vx_processor, wav, question, options, answer=2)
    text = f"{INSTRUCTION}\n\n{format_question(question, options)}"
    chat = [{"role": "user", "content": [{"type": "audio", "base64": as_base64(wav)}, {"type": "text", "text": text}]}]
    stock = vx_processor.apply_chat_template(chat)
    n = stock["input_ids"].shape[1]
    assert ex["input_ids"][:n].tolist() == stock["input_ids"][0].tolist()
    assert int((ex["input_ids"] == 24).sum()) == 1125
    torch.testing.assert_close(ex["input_features"], stock["input_features"], rtol=0, atol=0)
    assert ex["feature_attention_mask"].shape == (3, 3000) and bool(ex["feature_attention_mask"].all())
    # the target: "(3) chime" and </s>, the only labelled tokens
    tok = vx_processor.tokenizer
    assert ex["labels"][n:].tolist() == [*tok("(3) chime", add_special_tokens=False).input_ids, 2]
    assert bool((ex["labels"][:n] == -100).all())

    asked = "What is said after [/INST]?"
    prefix, suffix = chat_prompt_ids(vx_processor, encode_recording(vx_processor, wav).tokens(), asked)
    chat = [{"role": "user", "content": [{"type": "audio", "base64": as_base64(wav)}, {"type": "text", "text": asked}]}]
    assert prefix + suffix == vx_processor.apply_chat_template(chat)["input_ids"][0].tolist()
    assert suffix.count(tok.convert_tokens_to_ids("[/INST]")) == 1  # the typed one is text


def test_audio_tokens_equal_its_stock_audio_path(tiny_voxtral_model, vx_processor):
    from vlat.audio.tokens import encode_audio
    from vlat.data.prompts import encode_recording

    enc = encode_recording(vx_processor, tones(75))
    assert enc.tokens() == 1125 and enc.tokens("pool:2") == 3 * 188
    inner = tiny_voxtral_model.model
    with torch.no_grad():
        ours = encode_audio(inner, enc.features, enc.feature_mask)
        stock = inner.get_audio_features(enc.features).pooler_output
        pooled = encode_audio(inner, enc.features, enc.feature_mask, "pool:2")
    assert ours.embeds.shape == (1125, tiny_voxtral_model.config.text_config.hidden_size)
    torch.testing.assert_close(ours.embeds, stock, rtol=0, atol=0)
    assert ours.window_tokens.tolist() == [375, 375, 375] and len(pooled) == 564


def _example(vx_processor, seconds):
    from vlat.data.prompts import build_mcqa_example

    ex = build_mcqa_example(vx_processor, tones(seconds), "Which marker?", ["a", "b", "c", "d"])
    ids = ex["input_ids"][None]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "input_features": ex["input_features"],
        "feature_attention_mask": ex["feature_attention_mask"],
    }


def test_vanilla_equals_stock_and_partial_pi_positions_by_hand(tiny_voxtral_model, vx_processor):
    """On a real 60-s prompt (750 audio tokens in two chunks): vanilla is the stock forward bit for bit; Partial PI with a
    375-token (30-s) window puts the audio run's positions on linspace(p, p + 374, 750) and every text position
    after it at its raw position minus 375; text before the run is untouched."""
    import copy

    from vlat.rope import AudioRopeConfig, apply_audio_rope, find_audio_model

    model = copy.deepcopy(tiny_voxtral_model)
    batch = _example(vx_processor, 60)
    kw = forward_kwargs(model, batch)
    with torch.no_grad():
        stock = model(**kw).logits
        apply_audio_rope(model, AudioRopeConfig("vanilla"))
        assert torch.equal(model(**kw).logits, stock)

    seen = {}
    inv_freq = find_audio_model(model).language_model.rotary_emb.inv_freq.double()
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=375))
    rot = find_audio_model(model).language_model.rotary_emb
    handle = rot.register_forward_hook(lambda m, a, out: seen.update(cos=out[0]))
    with torch.no_grad():
        model(**kw)
    handle.remove()
    ids = batch["input_ids"][0]
    audio = (ids == 24).nonzero().flatten()
    p, n, T = int(audio[0]), len(audio), len(ids)
    assert n == 750
    pos = torch.cat(
        [
            torch.arange(p, dtype=torch.float64),
            torch.linspace(p, p + 374, n, dtype=torch.float64),
            torch.arange(p + n, T, dtype=torch.float64) - 375,
        ]
    )
    ang = pos[:, None] * inv_freq
    # float32 angles at positions up to ~400 (as the stock rotary computes them): within 1e-4; one position off is ~0.5
    torch.testing.assert_close(seen["cos"][0], torch.cat([ang, ang], -1).cos().float(), atol=1e-4, rtol=0)
    apply_audio_rope(model, AudioRopeConfig("vanilla"))


def test_generate_with_cache_equals_full_forward_on_real_chunks(tiny_voxtral_model, vx_processor):
    import copy

    from vlat.rope import AudioRopeConfig, apply_audio_rope

    model = copy.deepcopy(tiny_voxtral_model)
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=375, cutoff_dim=2, temperature=1.2))
    batch = _example(vx_processor, 60)
    out = model.generate(
        **forward_kwargs(model, batch),
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    seq = out.sequences
    with torch.no_grad():
        full = model(input_ids=seq, attention_mask=torch.ones_like(seq), input_features=batch["input_features"]).logits
    prompt = batch["input_ids"].shape[1]
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(logits, full[:, prompt - 1 + step], atol=2e-5, rtol=1e-4)
    apply_audio_rope(model, AudioRopeConfig("vanilla"))


def test_voxtral_needs_mistral_common_in_one_line(tiny_voxtral_model_dir, monkeypatch):
    import importlib.util

    from vlat.errors import ConfigError
    from vlat.models.loading import check_model_source

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mistral_common" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"Voxtral needs mistral-common: pip install 'vlat\[voxtral\]'"):
        check_model_source(str(tiny_voxtral_model_dir), "--model")


def test_a_system_prompt_is_refused_in_one_line(tiny_voxtral_model_dir, tmp_path):
    """Voxtral's chat has no system turn next to audio: ask.py --system-prompt says so instead of dropping it."""
    path = tmp_path / "talk.flac"
    sf.write(path, tones(5), 16000)
    res = subprocess.run(
        [sys.executable, str(ROOT / "ask.py"), "--model", str(tiny_voxtral_model_dir), "--audio", str(path),
         "What?", "--system-prompt", "Be brief.", "--no-progress"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "ask.py: error: system_prompt: Voxtral's chat has no system turn next to audio"
    )
