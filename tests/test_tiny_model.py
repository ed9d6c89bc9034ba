import subprocess
import sys

import numpy as np
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration


def test_loads_through_stock_classes_and_runs_with_audio(tiny_model_dir):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tok = processor.tokenizer
    for special in ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>", "<|im_start|>", "<|im_end|>"]:
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
        assert len(tok(special).input_ids) == 1, special
    assert model.config.audio_token_index == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert processor.feature_extractor.feature_size == 128
    text_cfg = model.config.text_config
    assert (text_cfg.hidden_size, text_cfg.num_hidden_layers, text_cfg.head_dim) == (64, 2, 16)

    messages = [{"role": "user", "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": "Hi?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 10).astype(np.float32)
    inputs = processor(text=text, audio=[audio], sampling_rate=16000, return_tensors="pt")
    # 10 s of audio -> 1000 mel frames -> 250 audio tokens by the model's own length formula
    assert int((inputs["input_ids"] == model.config.audio_token_index).sum()) == 250
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tok))
    assert torch.isfinite(out.logits).all()


def test_cli_writes_loadable_dir(tmp_path):
    out = tmp_path / "m"
    res = subprocess.run([sys.executable, "-m", "vlat.testing", "tiny-model", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    Qwen2AudioForConditionalGeneration.from_pretrained(out)
    AutoProcessor.from_pretrained(out)


def test_tokenizer_with_a_corpus_learns_its_words_and_still_encodes_anything(tmp_path):
    from vlat.testing.tiny_model import build_tokenizer

    plain = build_tokenizer()
    words = build_tokenizer(corpus=["Which tone is heard first in the recording?", "(1) amber (2) blue"])
    assert len(plain) == 256 + 6  # bytes + the six special tokens
    text = "Which tone is heard first? (3) blue"
    assert words.convert_ids_to_tokens(words(text).input_ids) == [
        "Which",
        "Ġtone",
        "Ġis",
        "Ġheard",
        "Ġfirst",
        "?",
        "Ġ(",
        "3",
        ")",
        "Ġblue",
    ]  # learnt words (and " (") are single tokens; digits stay apart (answer scoring reads the digit)
    for tok in (plain, words):
        for s in ["héllo wörld 🎵 (4) ember", "<|im_start|>user\n<|AUDIO|><|im_end|>"]:
            assert tok.decode(tok(s).input_ids) == s
        for special in ["<|AUDIO|>", "<|im_end|>", "<|endoftext|>"]:
            assert len(tok(special).input_ids) == 1
    words.save_pretrained(tmp_path)  # survives a save/load round trip as a stock tokenizer
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text).input_ids == words(text).input_ids
