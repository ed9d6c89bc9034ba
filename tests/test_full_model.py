"""``python -m vlat.testing full-model [--family F]``: a random checkpoint at the published widths that train.py and
evaluate.py load as they load the published checkpoint (one layer deep here, to fit CI: ~3 GB on disk). Qwen2-Audio
in the default suite, Audio Flamingo 3 and Voxtral in the slow set."""

import json
import subprocess
import sys

import numpy as np
import pytest
from test_evaluate import evaluate
from test_train import train, write_config
from transformers import AutoConfig, AutoProcessor

from vlat.models import FAMILIES
from vlat.testing.tiny_model import AF3_REAL_SPECIAL_IDS, REAL_SPECIAL_IDS

VOXTRAL_IDS = {"<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "<pad>": 11, "[AUDIO]": 24, "[BEGIN_AUDIO]": 25}

# family -> (its special tokens at the published ids, the audio placeholder, the widths read by hand from the
# published config.json: LM hidden size, KV heads, vocabulary; (eos, pad) ids; audio tokens of 30 s)
PUBLISHED = {
    "qwen2_audio": (REAL_SPECIAL_IDS, "<|AUDIO|>", (4096, 32, 156032), (151645, 151643), 750),
    "audioflamingo3": (AF3_REAL_SPECIAL_IDS, "<sound>", (3584, 4, 151672), (151645, 151643), 750),
    "voxtral": (VOXTRAL_IDS, "[AUDIO]", (3072, 8, 131072), (2, 11), 375),
}


def stock_prompt_ids(processor, audio):
    """The stock processor's ids for one recording and a question, as its model card shows."""
    if type(processor).__name__ == "VoxtralProcessor":  # mistral-common renders the chat, audio given encoded
        import base64
        import io

        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, audio, 16000, format="WAV")
        chat = [{"role": "user", "content": [{"type": "audio", "base64": base64.b64encode(buf.getvalue()).decode()},
                                             {"type": "text", "text": "Hi?"}]}]  # fmt: skip
        return processor.apply_chat_template(chat)["input_ids"]
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": "Hi?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=text, audio=[audio], sampling_rate=16000, return_tensors="pt")["input_ids"]


@pytest.mark.parametrize(
    "family",
    [
        "qwen2_audio",
        pytest.param("audioflamingo3", marks=pytest.mark.slow),
        pytest.param("voxtral", marks=pytest.mark.slow),
    ],
)
def test_full_model_is_the_published_layout_and_runs_train_and_evaluate(family, tmp_path, synth_dir):
    special_ids, audio_token, widths, eos_pad, per_window = PUBLISHED[family]
    model = tmp_path / "full"
    res = subprocess.run(
        [sys.executable, "-m", "vlat.testing", "full-model", str(model), "--layers", "1", "--audio-layers", "1",
         "--family", family],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    config, want = AutoConfig.from_pretrained(model), FAMILIES[family].published_config(1, 1)
    assert config.model_type == family
    text = config.text_config
    assert (text.hidden_size, text.num_key_value_heads, text.vocab_size) == widths
    for part in ("text_config", "audio_config"):
        got, ref = getattr(config, part).to_dict(), getattr(want, part).to_dict()
        assert {k: got[k] for k in ref if k not in ("dtype", "torch_dtype")} == {
            k: v for k, v in ref.items() if k not in ("dtype", "torch_dtype")
        }
    assert config.audio_token_id == special_ids[audio_token]
    processor = AutoProcessor.from_pretrained(model)
    tok = processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in special_ids} == special_ids
    assert (tok.eos_token_id, tok.pad_token_id) == eos_pad
    ids = stock_prompt_ids(processor, np.zeros(16000 * 30, dtype=np.float32))
    assert int((ids == special_ids[audio_token]).sum()) == per_window

    cfg, run = write_config(
        tmp_path, model, synth_dir, **{"trainer.max_steps": 1, "data.batch_size": 1, "data.val_split": None}
    )
    train(cfg)
    adapter = run / "checkpoints" / "last.ckpt"
    assert adapter.is_file()
    out = tmp_path / "eval"
    res = evaluate(
        "--model",
        model,
        "--adapter",
        adapter,
        "--data",
        synth_dir,
        "--max-questions",
        2,
        "--lengths",
        "0.5,1.25",
        "--output",
        out,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert sum(r["questions"] for r in results if r["method"] == "vanilla") == 2
