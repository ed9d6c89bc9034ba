"""Model families (:mod:`vlat.models`): the family read from config.json, unsupported models refused in one line
before anything loads, and Audio Flamingo 3 through the paths Qwen2-Audio takes — its prompt equal to its stock
processor's (without the 600-s cap), its audio tokens equal to its stock audio path; train.py / evaluate.py /
sweep.py / ask end to end for Audio Flamingo 3 and Voxtral (Voxtral's own checks: test_voxtral.py; the RoPE parity
tests of every family: test_rope.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vlat.models import AUDIO_FLAMINGO_3, QWEN2_AUDIO, family_of_checkpoint, family_of_model, forward_kwargs

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = "supported: Qwen2-Audio (qwen2_audio), Audio Flamingo 3 (audioflamingo3), Voxtral (voxtral)"


def tones(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * (300 + 2 * t) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def af3_processor(tiny_af3_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_af3_model_dir)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A checkpoint directory of a model vlat does not support (config.json only: nothing may load it)."""
    out = tmp_path_factory.mktemp("whisper")
    (out / "config.json").write_text(json.dumps({"model_type": "whisper", "architectures": ["WhisperModel"]}))
    return out


def test_the_family_is_read_from_the_checkpoint(tiny_model_dir, tiny_af3_model_dir, tiny_model, tiny_af3_model):
    from peft import LoraConfig, get_peft_model

    assert family_of_checkpoint(str(tiny_model_dir)) is QWEN2_AUDIO
    assert family_of_checkpoint(str(tiny_af3_model_dir)) is AUDIO_FLAMINGO_3
    assert family_of_model(tiny_model) is QWEN2_AUDIO and family_of_model(tiny_af3_model) is AUDIO_FLAMINGO_3
    wrapped = get_peft_model(  # a fresh copy: the session's model stays unwrapped
        type(tiny_af3_model).from_pretrained(tiny_af3_model_dir),
        LoraConfig(target_modules=r".*language_model.*\.q_proj"),
    )
    assert family_of_model(wrapped) is AUDIO_FLAMINGO_3
    # LoRA on the language model only: the audio tower's attention has q_proj too
    lora = {n for n, _ in wrapped.named_modules() if n.endswith("q_proj.lora_A")}
    assert lora and all(".language_model." in n for n in lora)
    # the forward's own name for the mel-frame mask
    kw = forward_kwargs(wrapped, {"feature_attention_mask": torch.ones(1, 4), "input_ids": torch.ones(1, 2)})
    assert set(kw) == {"input_features_mask", "input_ids"}
    assert set(forward_kwargs(tiny_model, {"feature_attention_mask": 1})) == {"feature_attention_mask"}


def test_an_unsupported_model_is_one_line_before_anything_loads(whisper_dir, synth_dir, tmp_path):
    from vlat.errors import ConfigError

    with pytest.raises(ConfigError, match="model_type 'whisper' is not a supported family"):
        family_of_checkpoint(str(whisper_dir))
    out = tmp_path / "eval"
    res = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--model", str(whisper_dir), "--data", str(synth_dir),
         "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2 and not out.exists()
    assert res.stderr.strip().splitlines() == [
        f"evaluate.py: error: --model {whisper_dir}: model_type 'whisper' is not a supported family ({SUPPORTED})"
    ]
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "smoke.yaml"),
         "--model.model_name_or_path", str(whisper_dir), "--trainer.default_root_dir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode != 0 and not (tmp_path / "run").exists()
    assert f"model_type 'whisper' is not a supported family ({SUPPORTED})" in res.stderr
    assert "Traceback" not in res.stderr
    audio = tmp_path / "a.wav"
    sf.write(audio, tones(1), 16000)
    res = subprocess.run(
        [sys.executable, str(ROOT / "ask.py"), "--model", str(whisper_dir), "--audio", str(audio), "What?"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"ask.py: error: model {whisper_dir}: model_type 'whisper' is not a supported family ({SUPPORTED})"
    ]


def test_af3_prompt_equals_its_stock_processor_without_the_600_s_cap(af3_processor):
    """vlat's MCQA prompt of a 75-s recording is token for token what AudioFlamingo3Processor makes of the same chat
    (one <sound> run of 750 + 750 + 375 tokens, identical features and mask); at 11 minutes the stock processor
    truncates to its 600 s (15,000 tokens) while vlat keeps the whole recording (16,500)."""
    from vlat.data.prompts import INSTRUCTION, SYSTEM_PROMPT, build_mcqa_example, encode_recording, format_question

    question, options = "Which marker is heard?", ["bell", "horn", "chime", "whistle"]
    wav = tones(75)
    ex = build_mcqa_example(af3_processor, wav, question, options)
    chat = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio": "audio"},
                {"type": "text", "text": f"{INSTRUCTION}\n\n{format_question(question, options)}"},
            ],
        },
    ]
    text = af3_processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    stock = af3_processor(text=text, audio=wav, return_tensors="pt")
    assert ex["input_ids"].tolist() == stock["input_ids"][0].tolist()
    audio_id = af3_processor.tokenizer.convert_tokens_to_ids("<sound>")
    assert int((ex["input_ids"] == audio_id).sum()) == 1875
    torch.testing.assert_close(ex["input_features"], stock["input_features"], rtol=0, atol=0)
    assert torch.equal(ex["feature_attention_mask"], stock["input_features_mask"].to(ex["feature_attention_mask"]))

    # the fixture's template renders as the published checkpoint's does: sounds first in a user turn, then its text
    published = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "audio", "path": "a"}]}]
    assert af3_processor.apply_chat_template(published, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound>What is it?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    long = tones(660)
    assert encode_recording(af3_processor, long).tokens() == 16500
    capped = af3_processor(text=text, audio=long, return_tensors="pt")
    assert int((capped["input_ids"] == audio_id).sum()) == 15000


def test_af3_audio_tokens_equal_its_stock_audio_path(tiny_af3_model, af3_processor):
    from vlat.audio.tokens import encode_audio
    from vlat.data.prompts import encode_recording

    enc = encode_recording(af3_processor, tones(75))
    inner = tiny_af3_model.model
    with torch.no_grad():
        ours = encode_audio(inner, enc.features, enc.feature_mask).embeds
        stock = inner.get_audio_features(enc.features, enc.feature_mask.long()).pooler_output
    assert ours.shape == (1875, tiny_af3_model.config.text_config.hidden_size)
    torch.testing.assert_close(ours, stock, rtol=0, atol=0)


# family -> (its tiny checkpoint's fixture, audio tokens per evaluate.py cell (compression, minutes): uncompressed
# and pooled by 2, sweep.py's (length, original window in seconds))
END_TO_END = {
    # 750 per 30-s window, 75 s: 750 + 750 + 375; pooled by 2: 375, and 375 + 375 + 188
    "audioflamingo3": (
        "tiny_af3_model_dir",
        {("none", 0.5): 750, ("none", 1.25): 1875, ("pool:2", 0.5): 375, ("pool:2", 1.25): 938},
        (0.5, 20),
    ),
    # 375 per whole 30-s chunk (75 s: three chunks, the last padded); pooled by 2: 188 per chunk
    "voxtral": (
        "tiny_voxtral_model_dir",
        {("none", 0.5): 375, ("none", 1.25): 1125, ("pool:2", 0.5): 188, ("pool:2", 1.25): 564},
        (1.25, 30),
    ),
}

# Voxtral's runs also go with the seam tests on the oldest allowed versions (MistralCommonBackend, its classes)
OTHER_FAMILIES = ["audioflamingo3", pytest.param("voxtral", marks=pytest.mark.seam)]


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_train_and_evaluate_end_to_end(family, request, tmp_path, synth_dir):
    """VLAT LoRA training on each other family writes its adapter (LoRA on the language model only); evaluate.py
    scores it per bucket on every test question, uncompressed and pooled."""
    from tests.test_train import scalars, train, write_config

    fixture, tokens, _ = END_TO_END[family]
    model_dir = request.getfixturevalue(fixture)
    config, run = write_config(
        tmp_path,
        model_dir,
        synth_dir,
        **{
            "trainer.max_steps": 3,
            "trainer.val_check_interval": 3,
            "trainer.callbacks.1.init_args.every_n_train_steps": 3,
        },
    )
    train(config)
    loss = scalars(run, "train/loss")
    assert len(loss) == 3 and all(np.isfinite(list(loss.values())))
    adapter = run / "checkpoints" / "last-adapter"
    from safetensors.torch import load_file

    names = list(load_file(adapter / "adapter_model.safetensors"))
    assert names and all(".language_model." in n for n in names)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir)

    out = tmp_path / "eval"
    res = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--no-progress", "--model", str(model_dir),
         "--adapter", str(run / "checkpoints" / "last.ckpt"), "--data", str(synth_dir),
         "--methods", "vanilla,partial_pi", "--lengths", "0.5,1.25", "--audio-compression", "none,pool:2",
         "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    test_rows = [json.loads(x) for x in open(Path(synth_dir) / "test.jsonl")]
    want = {0.5: sum(r["duration"] == 30.0 for r in test_rows), 1.25: sum(r["duration"] == 75.0 for r in test_rows)}
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["compression"], r["method"], r["length_min"]): r["questions"] for r in results} == {
        (c, m, x): want[x] for c in ("none", "pool:2") for m in ("vanilla", "partial_pi") for x in (0.5, 1.25)
    }
    assert all(r["audio_tokens_mean"] == tokens[r["compression"], r["length_min"]] for r in results)


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_ask_equals_generate(family, request, tmp_path):
    """ask on each other family: a 75-s recording is inside its native window (AF3 600 s, Voxtral 40 min: vanilla
    positions); the answer is what the stock generate() gives for the same prompt."""
    from vlat.data.prompts import chat_prompt_ids, encode_recording
    from vlat.models import FAMILIES
    from vlat.qa import LongAudioQA

    path = tmp_path / "talk.flac"
    sf.write(path, tones(75), 16000)
    qa = LongAudioQA(str(request.getfixturevalue(END_TO_END[family][0])), progress=False)
    rec = qa.listen(path, max_new_tokens=6)
    window = FAMILIES[family].native_seconds
    assert rec.settings.rope_method == "vanilla" and f"{window:g}-s window" in rec.chose
    text = qa.ask(rec, "What is heard?", max_new_tokens=6)
    enc = encode_recording(qa.processor, str(path))
    prefix, suffix = chat_prompt_ids(qa.processor, enc.tokens(), "What is heard?")
    ids = torch.tensor([prefix + suffix])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": enc.features}
    inputs["feature_attention_mask"] = enc.feature_mask
    out = qa.model.generate(**forward_kwargs(qa.model, inputs), max_new_tokens=6, do_sample=False)
    assert qa.last_reply_ids == out[0, ids.shape[1] :].tolist()
    assert text == qa.processor.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_sweep(family, request, tmp_path, synth_dir):
    """sweep.py on each other family: every (cutoff, temperature) cell scores the bucket's test questions."""
    fixture, _, (length, seconds) = END_TO_END[family]
    out = tmp_path / "sweep"
    res = subprocess.run(
        [sys.executable, str(ROOT / "sweep.py"), "--model", str(request.getfixturevalue(fixture)),
         "--data", str(synth_dir), "--length", str(length), "--original-audio-seconds", str(seconds),
         "--cutoffs", "0,6", "--temperatures", "1.0,1.5", "--output", str(out), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "sweep.json").read_text())
    test_rows = [json.loads(x) for x in open(Path(synth_dir) / "test.jsonl")]
    assert np.array(result["accuracy"]).shape == (2, 2)
    assert result["questions"] == sum(r["duration"] == length * 60 for r in test_rows)
