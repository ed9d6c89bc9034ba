"""ask.py / vlat.qa: free-form answers about one long recording, prefilled once, with the adapter's own settings."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vlat.qa import AskSettings, LongAudioQA

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is heard?", "Describe the second minute.", "Is there a bell?"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """75 s of tones: longer than the 30-s window (three encoder windows)."""
    t = np.arange(75 * 16000) / 16000
    path = tmp_path_factory.mktemp("ask") / "talk.flac"
    sf.write(path, (0.1 * np.sin(2 * np.pi * (300 + 2 * t) * t)).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def qa(tiny_model_dir):
    return LongAudioQA(str(tiny_model_dir), progress=False)


def test_answer_equals_generate_on_the_same_prompt(qa, recording):
    import vlat
    from vlat.data.prompts import chat_prompt_ids, encode_recording

    assert vlat.LongAudioQA is LongAudioQA  # the Python API: vlat.LongAudioQA(model, adapter).ask(path, question)
    rec = qa.listen(recording, max_new_tokens=8)
    assert rec.settings.rope_method == "partial_pi" and "longer than the 30-s window" in rec.chose
    text = qa.ask(rec, QUESTIONS[0], max_new_tokens=8)
    enc = encode_recording(qa.processor, str(recording))
    prefix, suffix = chat_prompt_ids(qa.processor, enc.tokens(), QUESTIONS[0])
    assert prefix == rec.prefix_ids
    ids = torch.tensor([prefix + suffix])
    out = qa.model.generate(  # the stock generate() through the same audio RoPE seam (Partial PI installed)
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        input_features=enc.features,
        feature_attention_mask=enc.feature_mask,
        max_new_tokens=8,
        do_sample=False,
    )
    assert qa.last_reply_ids == out[0, ids.shape[1] :].tolist()
    assert text == qa.processor.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_several_questions_share_one_prefill(qa, recording, monkeypatch):
    import vlat.evaluation.prefix as prefix

    calls = []
    real = prefix.prefill
    monkeypatch.setattr(prefix, "prefill", lambda *a, **k: calls.append(1) or real(*a, **k))
    rec = qa.listen(recording, max_new_tokens=6)
    together = [qa.ask(rec, q, max_new_tokens=6) for q in QUESTIONS]
    assert len(calls) == 1  # the recording's prefix was prefilled once for three questions
    assert rec.cache.get_seq_length() == len(rec.prefix_ids)  # cropped back after each
    alone = []
    for q in QUESTIONS:  # each asked on its own freshly prefilled recording
        alone.append(qa.ask(qa.listen(recording, max_new_tokens=6), q, max_new_tokens=6))
    assert together == alone and len(calls) == 1 + len(QUESTIONS)
    sampled = [qa.ask(rec, QUESTIONS[0], max_new_tokens=6, temperature=1.5, seed=s) for s in (0, 0, 1, 2)]
    assert sampled[0] == sampled[1] and len(set(sampled)) > 1  # seeded sampling: reproducible, and it samples


def _adapter(tiny_model_dir, out, training):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from vlat.training.adapter_record import write_record

    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj"))
    model.save_pretrained(out)
    if training is not None:
        write_record(out, str(tiny_model_dir), model, training)
    return out


def test_the_adapters_recorded_settings_are_applied_and_overridable(tiny_model_dir, recording, tmp_path):
    from vlat.rope import current_config

    trained = {"rope_method": "partial_yarn", "original_audio_seconds": 20.0, "cutoff_dim": 2, "temperature": 1.3}
    trained |= {"audio_compression": "none", "vlat": {"strategy": "default", "per_sample": False, "factors": 6}}
    adapter = _adapter(tiny_model_dir, tmp_path / "a", trained)
    qa = LongAudioQA(str(tiny_model_dir), str(adapter), progress=False)
    rec = qa.listen(recording, max_new_tokens=4)
    cfg = current_config(qa.model)
    assert (cfg.method, cfg.original_audio_tokens, cfg.cutoff_dim, cfg.temperature) == ("partial_yarn", 500, 2, 1.3)
    assert "as the adapter was trained" in rec.chose
    qa.settings = AskSettings(rope_method="vanilla", original_audio_seconds=60.0)  # overridden
    rec = qa.listen(recording, max_new_tokens=4)
    assert (current_config(qa.model).method, rec.settings.original_audio_seconds) == ("vanilla", 60.0)
    # an adapter saved before records existed: the defaults (Partial PI beyond the window)
    old = LongAudioQA(str(tiny_model_dir), str(_adapter(tiny_model_dir, tmp_path / "b", None)), progress=False)
    assert old.recorded is None and old.listen(recording, max_new_tokens=4).settings.rope_method == "partial_pi"


def test_within_the_window_a_base_model_keeps_vanilla(qa, recording, tmp_path):
    long = qa.listen(recording, max_new_tokens=4)
    before = qa.ask(long, QUESTIONS[1], max_new_tokens=4)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(20 * 16000, dtype=np.float32), 16000)
    rec = qa.listen(short, max_new_tokens=4)
    assert rec.settings.rope_method == "vanilla" and "fits the 30-s window" in rec.chose
    assert qa.ask(long, QUESTIONS[1], max_new_tokens=4) == before  # the long one keeps its own Partial PI


def _main(argv, capsys, monkeypatch, loads: bool = False):
    import ask
    import vlat.models.loading

    capsys.readouterr()  # what the test's own setup printed
    if not loads:  # these errors come before any model loads
        monkeypatch.setattr(vlat.models.loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    try:
        rc = ask.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("case", ["missing", "unreadable", "empty_question", "bad_top_p", "other_base", "no_question"])
def test_bad_input_is_one_line_before_the_model_loads(case, tiny_model_dir, recording, tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT))
    args = ["--model", tiny_model_dir, "--audio", recording, "What?"]
    expect = {
        "missing": (str(tmp_path / "nope.wav"), "no such file"),
        "unreadable": (str(tmp_path / "text.wav"), "cannot decode audio"),
    }
    (tmp_path / "text.wav").write_text("not audio")
    if case in expect:
        args[3], needle = expect[case]
    elif case == "empty_question":
        args[4], needle = "   ", "question: empty"
    elif case == "bad_top_p":
        args += ["--top-p", "0"]
        needle = "top_p: 0.0 must be in (0, 1]"
    elif case == "no_question":
        args, needle = args[:4], "give at least one question, or --interactive"
    else:  # a plain PEFT adapter whose config names another base model
        adapter = _adapter(tiny_model_dir, tmp_path / "other", None)
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "org/other-model"}))
        args += ["--adapter", adapter]
        needle = "was trained on base model org/other-model"
    rc, err = _main(args, capsys, monkeypatch)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("ask.py: error: "), err
    assert needle in err, err


def test_command_line_streams_the_same_answers(tiny_model_dir, recording, qa):
    """Two questions on the command line, a follow-up typed at --interactive's prompt: each streamed answer is the
    API's greedy answer."""
    cmd = [sys.executable, str(ROOT / "ask.py"), "--model", str(tiny_model_dir), "--audio", str(recording)]
    cmd += [*QUESTIONS[:2], "--interactive", "--max-new-tokens", "6", "--no-progress"]
    res = subprocess.run(cmd, input=QUESTIONS[2] + "\n", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "audio RoPE partial_pi from a 30-s window" in res.stderr
    rec = qa.listen(recording, max_new_tokens=6)
    for q in QUESTIONS:
        assert f"Q: {q}\nA: {qa.ask(rec, q, max_new_tokens=6)}\n" in res.stdout, res.stdout


def test_a_question_too_long_for_the_room_is_one_line(tiny_model_dir, recording, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT))
    args = ["--model", tiny_model_dir, "--audio", recording, "word " * 1500, QUESTIONS[0], "--no-progress"]
    rc, err = _main([*args, "--max-new-tokens", "4"], capsys, monkeypatch, loads=True)
    lines = [x for x in err.splitlines() if x.startswith("ask.py: error: ")]
    assert rc == 2 and len(lines) == 1 and "exceed the room reserved behind the recording" in lines[0], err


def test_the_chat_turns_end_stops_the_answer(qa, recording, monkeypatch):
    """<|im_end|> ends the answer even where the checkpoint's EOS is another token; the checkpoint's top_k applies
    when sampling (top_k 1: sampling at any temperature gives the greedy answer)."""
    from vlat.data.prompts import end_of_turn_id

    rec = qa.listen(recording, max_new_tokens=6)
    greedy = qa.ask(rec, QUESTIONS[0], max_new_tokens=6)
    monkeypatch.setattr(qa.model.generation_config, "top_k", 1)
    assert qa.ask(rec, QUESTIONS[0], max_new_tokens=6, temperature=2.0, seed=0) == greedy
    end = end_of_turn_id(qa.processor)
    monkeypatch.setattr(qa.model.generation_config, "eos_token_id", [0])
    head = qa.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor([end]), 1e4))
    try:
        text = qa.ask(rec, QUESTIONS[0], max_new_tokens=6)
    finally:
        handle.remove()
    assert qa.last_reply_ids == [end] and text == ""


def test_special_tokens_typed_in_a_question_are_text(qa):
    from vlat.data.prompts import chat_prompt_ids, end_of_turn_id

    tok, end = qa.processor.tokenizer, end_of_turn_id(qa.processor)
    _, plain = chat_prompt_ids(qa.processor, 3, QUESTIONS[0])
    assert plain == tok(QUESTIONS[0] + "<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).input_ids
    _, typed = chat_prompt_ids(qa.processor, 3, "What follows <|im_end|> here?")
    assert typed.count(end) == 1 and typed[-3:] == plain[-3:]  # only the template's own end of the user turn


def test_a_failed_answer_leaves_the_recording_reusable(qa, recording):
    """An error part-way through the layers (out of memory, Ctrl-C) extends only the layers before it: the cache is
    cropped back per layer, and the next question gets the answer it gets on a fresh prefill."""
    from vlat.rope import find_audio_model

    rec = qa.listen(recording, max_new_tokens=6)
    want = qa.ask(qa.listen(recording, max_new_tokens=6), QUESTIONS[1], max_new_tokens=6)
    layers = find_audio_model(qa.model).language_model.layers
    calls = []

    def fail_on_the_third_step(*_):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")

    handle = layers[len(layers) // 2].register_forward_pre_hook(fail_on_the_third_step)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            qa.ask(rec, QUESTIONS[0], max_new_tokens=6)
    finally:
        handle.remove()
    assert {layer.keys.shape[-2] for layer in rec.cache.layers} == {len(rec.prefix_ids)}
    assert qa.ask(rec, QUESTIONS[1], max_new_tokens=6) == want
