"""One copy of the shared prefix: packed questions, packed greedy decoding, chunked prefill, memory planning.

Reference everywhere: each question alone through the stock model (``predict_logits`` / ``generate``) on its full
prompt, as if no prefix were shared."""

import json

import pytest
import torch

import vlat.evaluation.prefix as prefix_mod
from vlat.audio.decode import audio_tokens_for_frames, featurize, load_audio
from vlat.data.collate import MCQACollator, model_inputs
from vlat.data.prompts import build_mcqa_example, mcqa_prompt_ids
from vlat.evaluation.memory import kv_bytes_per_token, recording_need
from vlat.evaluation.prefix import cache_elements, encode_audio, generate_answers, prefill, score_questions
from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids, predict_generate, predict_logits
from vlat.rope import AudioRopeConfig, apply_audio_rope
from vlat.rope.hf_cache import cache_in

pytestmark = pytest.mark.seam  # transformers / peft internals: also run on the oldest allowed versions

SPAN = 400  # audio positions of the "familiar" window: the 75-s recording (1875 tokens) is warped
CONFIGS = [
    AudioRopeConfig("vanilla"),
    AudioRopeConfig("partial_pi", original_audio_tokens=SPAN),
    AudioRopeConfig("partial_yarn", original_audio_tokens=SPAN, cutoff_dim=3, temperature=1.4),
    AudioRopeConfig("whole_pi", original_audio_tokens=SPAN),
    AudioRopeConfig("whole_yarn", original_audio_tokens=SPAN),
]


@pytest.fixture(scope="module")
def recording(synth_dir, processor):
    """The questions of one 75-s recording (the task asks two, of different lengths and different free replies)."""
    rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")]
    recs = [r for r in rows if r["audio"] == rows[-1]["audio"]]
    path = synth_dir / recs[0]["audio"]
    feats, fmask = featurize(load_audio(path), processor.feature_extractor)
    return {"recs": recs, "path": str(path), "feats": feats, "fmask": fmask}


def prompt_parts(processor, recording, opener):
    n_audio = int(audio_tokens_for_frames(recording["fmask"].sum(-1)).sum())
    parts = [mcqa_prompt_ids(processor, n_audio, r["question"], r["choices"], opener) for r in recording["recs"]]
    return parts[0][0], [p[1] for p in parts]


def alone(processor, recording, opener):
    """Each question's full prompt, one at a time (the reference)."""
    return [
        MCQACollator(processor.tokenizer.pad_token_id, "left")(
            [build_mcqa_example(processor, recording["path"], r["question"], r["choices"], assistant_prefix=opener)]
        )
        for r in recording["recs"]
    ]


@pytest.fixture
def rope(tiny_model):
    def install(cfg):
        apply_audio_rope(tiny_model, cfg)

    yield install
    apply_audio_rope(tiny_model, AudioRopeConfig("vanilla"))


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "in_turn"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_logits_scoring_equals_each_question_alone(tiny_model, processor, recording, rope, cfg, pack, monkeypatch):
    monkeypatch.setattr(prefix_mod, "packs_questions", lambda model: pack)  # in turn: what flash-attention 2 runs
    rope(cfg)
    options = option_token_ids(processor.tokenizer)
    want = [predict_logits(tiny_model, batch, options)[0] for batch in alone(processor, recording, LOGITS_PREFIX)]
    prefix, suffixes = prompt_parts(processor, recording, LOGITS_PREFIX)
    assert len({len(s) for s in suffixes}) > 1
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    got = score_questions(tiny_model, prefix, suffixes, embeds, options, prefill_chunk=700)
    assert [p.choice for p in got] == [p.choice for p in want]
    for g, w in zip(got, want, strict=True):
        assert max(abs(x - y) for x, y in zip(g.probs, w.probs, strict=True)) < 1e-5


@pytest.mark.parametrize("penalty", [1.0, 1.3], ids=["plain", "repetition_penalty"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_generate_scoring_equals_generate_on_each_question_alone(
    tiny_model, processor, recording, rope, cfg, penalty, monkeypatch
):
    monkeypatch.setattr(tiny_model.generation_config, "repetition_penalty", penalty)
    rope(cfg)
    tok = processor.tokenizer
    want = [predict_generate(tiny_model, tok, batch, max_new_tokens=12)[0] for batch in alone(processor, recording, "")]
    prefix, suffixes = prompt_parts(processor, recording, "")
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    got = generate_answers(tiny_model, tok, prefix, suffixes, embeds, max_new_tokens=12, prefill_chunk=700)
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.choice for g in got] == [w.choice for w in want]
    assert all(w.text for w in want)
    if penalty != 1.0:  # the penalty changes replies: applying it is part of the parity
        monkeypatch.setattr(tiny_model.generation_config, "repetition_penalty", 1.0)
        plain = generate_answers(tiny_model, tok, prefix, suffixes, embeds, max_new_tokens=12)
        assert [p.text for p in plain] != [g.text for g in got]


def test_vlat_names_the_cache_as_the_installed_transformers_does(tiny_model, processor, recording, rope):
    """No deprecation warning from vlat's own calls (transformers >= 5.24 renamed ``past_key_values`` to ``cache``)."""
    import warnings

    rope(CONFIGS[2])
    prefix, suffixes = prompt_parts(processor, recording, "")
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate_answers(tiny_model, processor.tokenizer, prefix, suffixes[:2], embeds, max_new_tokens=2)
    assert not [str(w.message) for w in caught if "past_key_values" in str(w.message)]


def test_generate_stops_each_question_at_its_end_of_sequence(tiny_model, processor, recording, monkeypatch):
    """Questions finish at different steps: make the model's end-of-sequence token one that the free replies reach
    at different steps, so some questions stop early while the others go on (as generate() does for each alone)."""
    tok = processor.tokenizer
    batches = alone(processor, recording, "")
    free = []
    for batch in batches:
        inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
        out = tiny_model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
        free.append(out.tolist())

    def steps(t):
        return [r.index(t) if t in r else len(r) for r in free]

    stop = next(t for t in free[0] if len(set(steps(t))) > 1)
    monkeypatch.setattr(tiny_model.generation_config, "eos_token_id", stop)
    want = [predict_generate(tiny_model, tok, b, max_new_tokens=8)[0] for b in batches]
    prefix, suffixes = prompt_parts(processor, recording, "")
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    got = generate_answers(tiny_model, tok, prefix, suffixes, embeds, max_new_tokens=8)
    assert [g.text for g in got] == [w.text for w in want]
    assert len({len(w.text) for w in want}) > 1


@pytest.mark.parametrize("questions", [1, 5, 10])
def test_cache_holds_one_prefix_copy(tiny_model, processor, recording, rope, questions, monkeypatch):
    """Count the cache: one prefix plus the packed suffix tokens, batch 1, whatever the number of questions; the
    memory plan's KV term is exactly that allocation."""
    caches, lengths = [], []
    make = prefix_mod.reserved_cache
    monkeypatch.setattr(prefix_mod, "reserved_cache", lambda n: caches.append(make(n)) or caches[-1])
    layer0 = tiny_model.model.language_model.layers[0]
    hook = layer0.register_forward_pre_hook(
        lambda m, a, kw: lengths.append(cache_in(kw).get_seq_length()), with_kwargs=True
    )
    rope(CONFIGS[2])
    prefix, suffixes = prompt_parts(processor, recording, LOGITS_PREFIX)
    suffixes = (suffixes * 2)[:questions]
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    try:
        score_questions(tiny_model, prefix, suffixes, embeds, option_token_ids(processor.tokenizer), prefill_chunk=0)
    finally:
        hook.remove()
    (cache,) = caches
    text = tiny_model.config.text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim
    packed = sum(len(s) for s in suffixes)
    assert cache_elements(cache) == per_token * (len(prefix) + packed)
    assert all(layer.keys.shape[0] == 1 for layer in cache.layers)
    assert lengths == [0, len(prefix)]  # the prefix once, then every question in one packed forward
    assert cache.get_seq_length() == len(prefix)  # cropped back to the prefix
    need = recording_need(tiny_model.config, 4, len(prefix), packed, 0, len(recording["feats"]))
    assert need.kv_cache == cache_elements(cache) * 4 == (len(prefix) + packed) * kv_bytes_per_token(text, 4)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_chunked_prefill_equals_one_shot(tiny_model, processor, recording, rope, cfg, monkeypatch):
    """Chunks of 333 tokens cut the 1,875-token audio run five times; the cache and the logits that follow equal
    one forward over the whole prefix (positions, temperature and whole-context factor continue across chunks)."""
    rope(cfg)
    prefix, suffixes = prompt_parts(processor, recording, LOGITS_PREFIX)
    audio = [i for i, t in enumerate(prefix) if t == tiny_model.config.audio_token_index]
    assert any(audio[0] < k < audio[-1] for k in range(333, len(prefix), 333))
    embeds = encode_audio(tiny_model, recording["feats"], recording["fmask"])
    suffix = suffixes[0]

    def run(chunk):
        cache = prefill(tiny_model, prefix, embeds, len(prefix) + len(suffix), chunk)
        keys = torch.cat([layer.keys for layer in cache.layers])
        tail = prefix_mod._Tail(len(prefix), embeds.device)
        hidden = tail.forward(
            tiny_model, cache, suffix, [0] * len(suffix), list(range(len(prefix), len(prefix) + len(suffix)))
        )
        return keys, tiny_model.get_output_embeddings()(hidden)

    keys, logits = run(0)
    chunked_keys, chunked_logits = run(333)
    assert (chunked_logits - logits).abs().max() < 1e-5
    assert (chunked_keys - keys).abs().max() < 1e-5
    if cfg.method != "vanilla":  # negative control: chunks planned one by one warp each piece of the run alone
        monkeypatch.setattr(prefix_mod, "plan_chunked_prefill", lambda *a: None)
        naive_keys, naive_logits = run(333)
        assert (naive_logits - logits).abs().max() > 1e-3


def test_memory_need_by_hand(tiny_model):
    """The plan on the tiny config, term by term (sdpa and eager)."""
    cfg = tiny_model.config
    t, a = cfg.text_config, cfg.audio_config
    need = recording_need(cfg, 2, prefix_tokens=1000, reserved_tokens=200, prefill_chunk=256, windows=3)
    kv = 1200 * 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * 2
    layer = 256 * (8 * t.hidden_size + 3 * t.intermediate_size) * 2 + 256 * 1200 * 4
    tower = 3 * 1500 * (6 * a.d_model + 2 * a.encoder_ffn_dim) * 2
    assert (need.tokens, need.kv_cache) == (1200, kv)
    assert need.working == max(layer, tower) + 2 * 1000 * t.hidden_size * 2
    eager = recording_need(cfg, 2, 1000, 200, 256, 3, attn_implementation="eager")
    scores = 256 * t.num_attention_heads * 1200 * (2 * 2 + 4)
    tower_scores = 3 * a.encoder_attention_heads * 1500 * 1500 * (2 * 2 + 4)
    assert eager.working == max(layer - 256 * 1200 * 4 + scores, tower + tower_scores) + 2 * 1000 * t.hidden_size * 2
