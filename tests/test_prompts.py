import numpy as np
import pytest
import soundfile as sf
import torch

from vlat.data.collate import MCQACollator, expand_features, model_inputs
from vlat.data.prompts import build_mcqa_example, encode_recording
from vlat.errors import BadSampleError
from vlat.rope import AudioRopeConfig, apply_audio_rope, warn_if_beyond_context

OPTIONS = ["a red kite", "a blue car", "a green pen", "a gold ring"]


def test_75s_stereo_file_is_one_contiguous_run(tmp_path, processor, tiny_model):
    t = np.arange(int(75 * 22050)) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype(np.float32) * 0.3
    sf.write(tmp_path / "talk.wav", stereo, 22050)
    ex = build_mcqa_example(processor, str(tmp_path / "talk.wav"), "What is shown?", OPTIONS, answer=2)
    ids = ex["input_ids"]
    tok = processor.tokenizer
    aid = tok.convert_tokens_to_ids("<|AUDIO|>")
    where = (ids == aid).nonzero().flatten()
    assert len(where) == 750 + 750 + 375
    assert (where[-1] - where[0] + 1) == len(where)  # one contiguous run
    assert ids[where[0] - 1] == tok.convert_tokens_to_ids("<|audio_bos|>")
    assert ids[where[-1] + 1] == tok.convert_tokens_to_ids("<|audio_eos|>")
    assert ex["input_features"].shape == (3, 128, 3000)
    assert ex["feature_attention_mask"].sum(-1).tolist() == [3000, 3000, 1500]
    # only the answer "(3) a green pen<|im_end|>" is trained on
    target = ex["labels"][ex["labels"] != -100]
    assert tok.decode(target) == "(3) a green pen<|im_end|>"
    assert tok.decode(ids[: len(ids) - len(target)]).endswith("<|im_start|>assistant\n")
    prompt_text = tok.decode(ids[ids != aid])
    assert "(1) a red kite\n(2) a blue car\n(3) a green pen\n(4) a gold ring" in prompt_text
    batch = MCQACollator(tok.pad_token_id)([ex])
    with torch.no_grad():
        out = tiny_model(**model_inputs(batch))
    assert torch.isfinite(out.loss) and out.logits.shape[1] == len(ids)


def test_audio_array_and_assistant_prefix(processor):
    ex = build_mcqa_example(processor, np.zeros(16000 * 5, dtype=np.float32), "Q?", OPTIONS, assistant_prefix="(")
    assert "labels" not in ex
    assert processor.tokenizer.decode(ex["input_ids"]).endswith("<|im_start|>assistant\n(")
    assert int((ex["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum()) == 125


@pytest.mark.parametrize(
    "options,answer,reason",
    [
        (OPTIONS[:3], 0, "bad_options"),
        (OPTIONS + ["e"], 0, "bad_options"),
        (OPTIONS, 4, "bad_answer"),
        (OPTIONS, -1, "bad_answer"),
        (["a", "", "c", "d"], 0, "bad_options"),
    ],
)
def test_bad_mcqa_fields(processor, options, answer, reason):
    with pytest.raises(BadSampleError) as err:
        build_mcqa_example(processor, np.zeros(1600, np.float32), "Q?", options, answer, name="row 7")
    assert err.value.reason == reason and "row 7" in str(err.value)


def test_over_long_audio_is_rejected(processor):
    with pytest.raises(BadSampleError, match="max_audio_seconds=10"):
        build_mcqa_example(processor, np.zeros(16000 * 11, np.float32), "Q?", OPTIONS, max_audio_seconds=10)


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_padding(processor, side):
    short = build_mcqa_example(processor, np.zeros(16000 * 5, np.float32), "Q?", OPTIONS, 1)
    long = build_mcqa_example(processor, np.zeros(16000 * 40, np.float32), "Q?", OPTIONS, 0)
    batch = MCQACollator(processor.tokenizer.pad_token_id, side)([short, long])
    n0 = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    real0 = batch["attention_mask"][0].bool()
    assert int(real0.sum()) == n0
    assert torch.equal(batch["input_ids"][0][real0], short["input_ids"])
    assert torch.equal(batch["labels"][0][real0], short["labels"])
    assert (batch["labels"][0][~real0] == -100).all()
    assert real0[-1] if side == "left" else real0[0]
    assert batch["input_features"].shape[0] == 1 + 2  # windows of both samples, in order
    assert batch["feature_attention_mask"].sum(-1).tolist() == [500, 3000, 1000]


def test_shared_features_expand_to_the_per_sample_batch(processor):
    """A batch that carries each recording's features once (a, b, a) expands to exactly the batch that copies them
    per sample: same windows in the same order, same masks, every other key untouched."""
    rng = np.random.default_rng(0)
    a = encode_recording(processor, rng.normal(0, 0.1, 16000 * 45).astype(np.float32))
    b = encode_recording(processor, rng.normal(0, 0.1, 16000 * 20).astype(np.float32))
    exs = [build_mcqa_example(processor, enc, f"Q{i}?", OPTIONS, i) for i, enc in enumerate((a, b, a))]
    plain = MCQACollator(processor.tokenizer.pad_token_id)(exs)
    shared = MCQACollator(processor.tokenizer.pad_token_id, share_features=True)(exs)
    assert "input_features" not in shared and shared["audio_index"] == [0, 1, 0]
    assert [f is e for f, e in zip(shared["audio_features"], (a.features, b.features), strict=True)] == [True, True]
    inputs = model_inputs(shared)  # what every forward takes: per-sample windows, the batch left as it was
    assert "audio_index" in shared and sorted(inputs) == sorted(model_inputs(plain))
    assert all(torch.equal(inputs[k], v) for k, v in model_inputs(plain).items())
    expanded = expand_features(shared)
    assert sorted(expanded) == sorted(plain)
    assert expanded["input_features"].shape == (2 + 1 + 2, 128, 3000)
    for key, value in plain.items():
        assert torch.equal(expanded[key], value), key
    assert expand_features(plain) is plain


def test_position_budget_warning(tiny_model):
    aid = tiny_model.config.audio_token_index
    ids = torch.tensor([[5] * 20 + [aid] * 15000 + [6] * 20])  # 10 minutes of Qwen2-Audio audio
    mask = torch.ones_like(ids)
    with pytest.warns(UserWarning, match="max_position_embeddings=8192"):
        assert warn_if_beyond_context(tiny_model, ids, mask)
    apply_audio_rope(tiny_model, AudioRopeConfig("partial_pi", original_audio_tokens=750))
    try:
        assert not warn_if_beyond_context(tiny_model, ids, mask)  # audio squeezed into 750 positions
    finally:
        apply_audio_rope(tiny_model, AudioRopeConfig("vanilla"))
