"""vlat.audio.compression: pooling and merging by hand, time-aligned positions by hand under every RoPE method, ``none``
bit-identical to the uncompressed path, and the forward seam equal to evaluation's shared prefix."""

import copy
import json
from fractions import Fraction

import pytest
import torch

from vlat.audio.compression import AudioCompression, compress
from vlat.audio.decode import audio_tokens_for_frames, featurize, load_audio
from vlat.audio.tokens import AudioTokens, encode_audio, time_layout
from vlat.data.collate import MCQACollator
from vlat.data.prompts import EncodedAudio, build_mcqa_example, mcqa_prompt_ids
from vlat.errors import ConfigError
from vlat.evaluation import prefix as prefix_mod
from vlat.evaluation.scoring import LOGITS_PREFIX, option_token_ids, predict_generate, predict_logits
from vlat.rope import (
    AudioRopeConfig,
    AudioTimes,
    apply_audio_compression,
    apply_audio_rope,
    find_audio_model,
    set_virtual_audio_tokens,
    warp_positions,
)

pytestmark = pytest.mark.seam  # transformers / peft internals: also run on the oldest allowed versions

# --- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, want",
    [
        ("none", AudioCompression()),
        ("pool:3", AudioCompression("pool", stride=3)),
        ("ltbm:0.5", AudioCompression("ltbm", ratio=Fraction(1, 2), window=4)),
        ("LTBM:0.25:2", AudioCompression("ltbm", ratio=Fraction(1, 4), window=2)),
        ("ltbm:0.75:global", AudioCompression("ltbm", ratio=Fraction(3, 4), window=None)),
    ],
)
def test_parse_and_name(spec, want):
    got = AudioCompression.parse(spec)
    assert got == want
    assert AudioCompression.parse(str(got)) == got  # the name reads back (results tables, configs)


@pytest.mark.parametrize("spec", ["pool", "pool:1", "pool:x", "ltbm:1", "ltbm:0", "ltbm:0.5:0", "avg:2", "ltbm:.5:w"])
def test_bad_settings_are_one_line_errors(spec):
    with pytest.raises(ConfigError, match=r"^audio_compression: .* is not none, pool:K") as e:
        AudioCompression.parse(spec)
    assert "\n" not in str(e.value)


def test_counts_by_hand():
    lengths = torch.tensor([750, 375, 7, 1])
    assert AudioCompression.parse("pool:2").count(lengths).tolist() == [375, 188, 4, 1]
    assert AudioCompression.parse("pool:4").count(lengths).tolist() == [188, 94, 2, 1]
    assert AudioCompression.parse("ltbm:0.5").count(lengths).tolist() == [375, 188, 4, 1]  # L - floor(L/2)
    assert AudioCompression.parse("ltbm:0.3").count(lengths).tolist() == [525, 263, 5, 1]  # exact: 0.3 = 3/10
    assert AudioCompression.parse("none").count(lengths).tolist() == [750, 375, 7, 1]


# --- pooling and merging by hand --------------------------------------------------------------------------------


def test_pool_by_hand_with_padding():
    x = torch.tensor([[[0.0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], [[1.0, 1], [3, 3], [5, 5], [99, 99], [99, 99]]])
    c = compress(x, torch.tensor([5, 3]), AudioCompression.parse("pool:2"))
    assert c.counts.tolist() == [3, 2]
    torch.testing.assert_close(c.x[0], torch.tensor([[1.0, 2], [5, 6], [8, 9]]))  # last group: one token
    torch.testing.assert_close(c.x[1, :2], torch.tensor([[2.0, 2], [5, 5]]))  # padding (99) never enters
    assert c.size.tolist() == [[2, 2, 1], [2, 1, 0]]
    assert c.centre.tolist() == [[0.5, 2.5, 4], [0.5, 2, 0]]
    assert c.start.tolist() == [[0, 2, 4], [0, 2, 0]]
    assert c.stop.tolist() == [[2, 4, 5], [2, 3, 0]]


def _four():
    # x0 = (1, 0), x1 = (0, 1), x2 = (1, 1), x3 = (1, 0.01): A = {x0, x2}, B = {x1, x3} (alternating in time)
    return torch.tensor([[[1.0, 0], [0, 1], [1, 1], [1, 0.01]]])


def test_ltbm_local_window_by_hand():
    # window 1: x0 may only meet x1 (cos 0); x2 meets x1 (0.707) and x3 (0.714): x2 merges into x3
    c = compress(_four(), torch.tensor([4]), AudioCompression.parse("ltbm:0.25:1"))
    assert c.counts.tolist() == [3]
    torch.testing.assert_close(c.x[0], torch.tensor([[1.0, 0], [0, 1], [1, 0.505]]))
    assert c.size.tolist() == [[1, 1, 2]]
    assert c.centre.tolist() == [[0, 1, 2.5]]
    assert c.start.tolist() == [[0, 1, 2]] and c.stop.tolist() == [[1, 2, 4]]


def test_global_variant_merges_across_the_window_by_hand():
    # no distance limit: x0 meets x3 (cos 0.99995), the best pair: x0 merges into x3; time order by centre
    c = compress(_four(), torch.tensor([4]), AudioCompression.parse("ltbm:0.25:global"))
    torch.testing.assert_close(c.x[0], torch.tensor([[0.0, 1], [1, 0.005], [1, 1]]))
    assert c.size.tolist() == [[1, 2, 1]]
    assert c.centre.tolist() == [[1, 1.5, 2]]
    assert c.start.tolist() == [[1, 0, 2]] and c.stop.tolist() == [[2, 4, 3]]  # covers {0, 3}: start 0, stop 4


def test_ltbm_rounds_keep_size_weighted_means():
    # 3/4 removed from 4 tokens: two rounds; the last token must be the plain mean of all four (sizes carried)
    c = compress(_four(), torch.tensor([4]), AudioCompression.parse("ltbm:0.75:global"))
    assert c.counts.tolist() == [1]
    torch.testing.assert_close(c.x[0, 0], _four()[0].mean(0))
    assert c.size.tolist() == [[4]] and c.centre.tolist() == [[1.5]]
    assert c.start.tolist() == [[0]] and c.stop.tolist() == [[4]]


@pytest.mark.parametrize("spec", ["pool:3", "ltbm:0.5", "ltbm:0.7:2", "ltbm:0.6:global"])
def test_batched_windows_equal_each_alone(spec):
    torch.manual_seed(0)
    x, lengths = torch.randn(3, 50, 8), torch.tensor([50, 23, 1])
    cfg = AudioCompression.parse(spec)
    together = compress(x, lengths, cfg)
    assert together.counts.tolist() == cfg.count(lengths).tolist()
    for w in range(3):
        alone = compress(x[w : w + 1, : lengths[w]], lengths[w : w + 1], cfg)
        m = int(alone.counts[0])
        for got, want in zip(together, alone, strict=True):
            if got.dim() > 1:
                torch.testing.assert_close(got[w, :m], want[0, :m])
        assert torch.equal(together.size[w].sum(), lengths[w].float())  # every token counted once
        assert (together.centre[w, 1:m] >= together.centre[w, : m - 1]).all()  # time order


# --- time-aligned positions by hand -----------------------------------------------------------------------------


def test_time_layout_by_hand():
    # row 0: one run over window 0 (5 tokens -> 3) and window 1 (3 -> 2); row 1: window 2 (2 -> 1)
    tokens = AudioTokens(
        embeds=torch.zeros(6, 1),
        window=torch.tensor([0, 0, 0, 1, 1, 2]),
        centre=torch.tensor([0.5, 2.5, 4, 0.5, 2, 0.5]),
        stop=torch.tensor([2.0, 4, 5, 2, 3, 2]),
        window_tokens=torch.tensor([5, 3, 2]),
        compression=AudioCompression.parse("pool:2"),
    )
    a = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0]]).bool()
    t = time_layout(a, tokens)
    assert t.centre.tolist() == [[0, 0.5, 2.5, 4, 5.5, 7, 0], [0, 0, 0.5, 0, 0, 0, 0]]
    assert t.stop.tolist() == [[0, 2, 4, 5, 7, 8, 0], [0, 0, 2, 0, 0, 0, 0]]
    extra = a.clone()
    extra[1, 3] = True
    with pytest.raises(ValueError, match=r"the sequence has 7 <\|AUDIO\|> tokens, the audio gives 6"):
        time_layout(extra, tokens)


def test_compressed_positions_by_hand():
    # text 0 1 | 3 tokens pooled from n = 5 (centres 0.5, 2.5, 4; stops 2, 4, 5) | text; raw 0..6, p = 2
    a = torch.tensor([[0, 0, 1, 1, 1, 0, 0]]).bool()
    raw = torch.arange(7)[None]
    times = AudioTimes(torch.tensor([[0, 0, 0.5, 2.5, 4, 0, 0]]), torch.tensor([[0, 0, 2.0, 4, 5, 0, 0]]))
    unwarped = warp_positions(a, raw, None, times=times)  # p + c; the run takes n = 5 positions: text at 7, 8
    assert unwarped.positions.tolist() == [[0, 1, 2.5, 4.5, 6, 7, 8]]
    assert unwarped.shift.tolist() == [2.0] and unwarped.audio_time.tolist() == [5.0]
    assert warp_positions(a, raw, 8, times=times).positions.tolist() == unwarped.positions.tolist()  # n <= S
    warped = warp_positions(a, raw, 3, times=times)  # n = 5 > S = 3: p + c (S-1)/(n-1); text at p + S = 5
    assert warped.positions.tolist() == [[0, 1, 2.25, 3.25, 4, 5, 6]] and warped.shift.tolist() == [0.0]
    assert warped.warped_audio.tolist() == [[False, False, True, True, True, False, False]]
    vlat = warp_positions(a, raw, 10, warp_all=True, times=times)  # VLAT: step 9/4; text at p + S = 12
    assert vlat.positions.tolist() == [[0, 1, 3.125, 7.625, 11, 12, 13]]


def test_uncompressed_times_are_bit_identical():
    """Times that say "one token per index" give exactly the positions of the count-based path."""
    a = torch.tensor([[0, 1, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0]]).bool()
    raw = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 1, 1, 1]])
    run_start = torch.tensor([[0, 1, 1, 1, 1, 1, 6, 6, 6], [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    j = ((torch.arange(9)[None] - run_start) * a).float()  # index inside each run, by hand
    times = AudioTimes(j, (j + 1) * a)
    for span, warp_all in [(3, False), (2, True), (None, False), (100, True)]:
        plain = warp_positions(a, raw, span, warp_all)
        timed = warp_positions(a, raw, span, warp_all, times)
        for p, t in zip(plain, timed, strict=True):
            assert torch.equal(p, t)


# --- through the model: the forward seam ------------------------------------------------------------------------


@pytest.fixture()
def model(tiny_model):
    m = copy.deepcopy(tiny_model)
    yield m


def _one_window(n_audio, pre=(5, 6, 7), post=(8, 9, 10, 11)):
    """A prompt of ``n_audio`` uncompressed tokens' audio (one window: 4 mel frames per token)."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 128, 3000, generator=g)
    fmask = torch.zeros(1, 3000, dtype=torch.long)
    fmask[0, : 4 * n_audio] = 1
    return feats, fmask, pre, post


def _kw(model, comp, n_audio=40):
    feats, fmask, pre, post = _one_window(n_audio)
    m = int(AudioCompression.parse(comp).count(n_audio))
    ids = torch.tensor([[*pre, *([model.config.audio_token_index] * m), *post]])
    return dict(input_ids=ids, input_features=feats, feature_attention_mask=fmask), m


def _cos(model, **kw):
    rot = find_audio_model(model).language_model.rotary_emb
    seen = {}
    handle = rot.register_forward_hook(lambda mod, a, out: seen.update(cos=out[0]))
    with torch.no_grad():
        model(**kw)
    handle.remove()
    return seen["cos"][0].double()


INV_FREQ = torch.tensor([10000 ** (-2 * i / 16) for i in range(8)], dtype=torch.float64)  # tiny model: head_dim 16


def _expected_cos(raw, warped, cutoff=0, scale=None, inv_freq=INV_FREQ):
    pos = torch.stack([raw if i < cutoff else warped for i in range(8)], -1)
    ang = pos * inv_freq
    cos = torch.cat([ang, ang], -1).cos()
    return cos if scale is None else cos * scale[:, None]


def test_compressed_forward_positions_by_hand(model):
    """40 tokens of audio pooled by 2 into 20 (centres 0.5, 2.5, ..., 38.5; n = 40) after 3 text tokens, then 4
    text tokens: every method places them by time, as the 40 uncompressed tokens would be."""
    kw, m = _kw(model, "pool:2")
    assert m == 20
    c = torch.arange(20, dtype=torch.float64) * 2 + 0.5
    text = torch.arange(3, dtype=torch.float64)
    raw = torch.cat([text, 3 + c, 43 + torch.arange(4.0, dtype=torch.float64)])  # text after at p + n = 43
    apply_audio_compression(model, "pool:2")  # vanilla + compression: time-aligned positions on every pair
    torch.testing.assert_close(_cos(model, **kw), _expected_cos(raw, raw), atol=2e-6, rtol=0)

    warped = torch.cat([text, 3 + c * 9 / 39, 13 + torch.arange(4.0, dtype=torch.float64)])  # S = 10 < n = 40
    scale = torch.tensor([1.0] * 3 + [1 / 1.2] * 20 + [1.0] * 4, dtype=torch.float64)
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=2, temperature=1.44))
    want = _expected_cos(raw, warped, cutoff=2, scale=scale)
    torch.testing.assert_close(_cos(model, **kw), want, atol=2e-6, rtol=0)

    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=10))
    torch.testing.assert_close(_cos(model, **kw), _expected_cos(raw, warped), atol=2e-6, rtol=0)

    set_virtual_audio_tokens(model, 100)  # VLAT: n = 40 stretched over 100 positions; text after at 103
    stretched = torch.cat([text, 3 + c * 99 / 39, 103 + torch.arange(4.0, dtype=torch.float64)])
    torch.testing.assert_close(_cos(model, **kw), _expected_cos(raw, stretched), atol=2e-5, rtol=0)  # fp32 at ~100

    apply_audio_rope(model, AudioRopeConfig("whole_pi", original_audio_tokens=10))  # factor n / S = 4 (not m / S)
    torch.testing.assert_close(_cos(model, **kw), _expected_cos(raw, raw, inv_freq=INV_FREQ / 4), atol=2e-6, rtol=0)


def test_none_is_bit_identical(model):
    kw, _ = _kw(model, "none")
    kw["attention_mask"] = torch.ones_like(kw["input_ids"])
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=2, temperature=1.4))
    with torch.no_grad():
        plain = model(**kw).logits
        apply_audio_compression(model, "none")
        assert torch.equal(model(**kw).logits, plain)
        apply_audio_compression(model, "pool:2")  # and back
        apply_audio_compression(model, "none")
        assert torch.equal(model(**kw).logits, plain)
        # the one audio encoder of the package equals the stock forward's audio path exactly
        audio_model = find_audio_model(model)
        mine = encode_audio(audio_model, kw["input_features"], kw["feature_attention_mask"], windows=1).embeds
        embeds = {}
        hook = audio_model.language_model.register_forward_pre_hook(
            lambda mod, a, k: embeds.update(x=k["inputs_embeds"]), with_kwargs=True
        )
        apply_audio_rope(model, AudioRopeConfig("vanilla"))
        model(**kw)
        hook.remove()
    audio = kw["input_ids"][0] == model.config.audio_token_index
    assert torch.equal(embeds["x"][0, audio], mine)
    assert find_audio_model(model).language_model.rotary_emb.__class__.__name__ == "Qwen2RotaryEmbedding"


def test_wrong_token_count_is_a_one_line_error(model):
    kw, _ = _kw(model, "none")  # a prompt built without compression ...
    apply_audio_compression(model, "pool:2")  # ... on a model that compresses
    with pytest.raises(ValueError, match=r"audio compression pool:2: the prompt holds 40 <\|AUDIO\|> tokens but"):
        model(**kw)


# --- evaluation's shared prefix equals the forward seam ---------------------------------------------------------

SPAN = 400
CONFIGS = [
    AudioRopeConfig("vanilla"),
    AudioRopeConfig("partial_pi", original_audio_tokens=SPAN),
    AudioRopeConfig("partial_yarn", original_audio_tokens=SPAN, cutoff_dim=3, temperature=1.4),
    AudioRopeConfig("whole_yarn", original_audio_tokens=SPAN),
]


@pytest.fixture(scope="module")
def recording(synth_dir, processor):
    rows = [json.loads(x) for x in open(synth_dir / "test.jsonl")]
    recs = [r for r in rows if r["audio"] == rows[-1]["audio"]]  # a 75-s recording: windows of 750, 750, 375
    feats, fmask = featurize(load_audio(synth_dir / recs[0]["audio"]), processor.feature_extractor)
    return recs, feats, fmask


def _alone(processor, recording, comp, opener):
    recs, feats, fmask = recording
    enc = EncodedAudio(feats, fmask, audio_tokens_for_frames(fmask.sum(-1)))
    collate = MCQACollator(processor.tokenizer.pad_token_id, "left")
    return [
        collate(
            [
                build_mcqa_example(
                    processor, enc, r["question"], r["choices"], assistant_prefix=opener, audio_compression=comp
                )
            ]
        )
        for r in recs
    ]


def _parts(processor, recording, comp, opener):
    recs, feats, fmask = recording
    n = EncodedAudio(feats, fmask, audio_tokens_for_frames(fmask.sum(-1))).tokens(comp)
    parts = [mcqa_prompt_ids(processor, n, r["question"], r["choices"], opener) for r in recs]
    return parts[0][0], [p[1] for p in parts]


@pytest.mark.parametrize("comp", ["pool:2", "ltbm:0.5", "ltbm:0.7:global"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_prefix_scoring_with_compression_equals_each_question_alone(model, processor, recording, cfg, comp):
    apply_audio_compression(apply_audio_rope(model, cfg), comp)
    options = option_token_ids(processor.tokenizer)
    want = [predict_logits(model, b, options)[0] for b in _alone(processor, recording, comp, LOGITS_PREFIX)]
    prefix, suffixes = _parts(processor, recording, comp, LOGITS_PREFIX)
    audio = prefix_mod.encode_audio(model, recording[1], recording[2])
    assert len(audio) == {"pool:2": 938, "ltbm:0.5": 938, "ltbm:0.7:global": 563}[comp]  # 375+375+188, 225*2+113
    got = prefix_mod.score_questions(model, prefix, suffixes, audio, options, prefill_chunk=300)
    for g, w in zip(got, want, strict=True):
        assert max(abs(x - y) for x, y in zip(g.probs, w.probs, strict=True)) < 1e-5
    apply_audio_compression(model, "none")  # control: compression changes what the model sees
    uncompressed = prefix_mod.score_questions(
        model,
        *_parts(processor, recording, "none", LOGITS_PREFIX),
        prefix_mod.encode_audio(model, *recording[1:]),
        options,
    )
    assert (
        max(abs(x - y) for g, u in zip(got, uncompressed, strict=True) for x, y in zip(g.probs, u.probs, strict=True))
        > 1e-4
    )


def test_generate_with_compression_equals_generate_alone(model, processor, recording):
    apply_audio_compression(apply_audio_rope(model, CONFIGS[2]), "pool:3")
    tok = processor.tokenizer
    want = [predict_generate(model, tok, b, max_new_tokens=8)[0] for b in _alone(processor, recording, "pool:3", "")]
    prefix, suffixes = _parts(processor, recording, "pool:3", "")
    audio = prefix_mod.encode_audio(model, recording[1], recording[2])
    got = prefix_mod.generate_answers(model, tok, prefix, suffixes, audio, max_new_tokens=8, prefill_chunk=300)
    assert [g.text for g in got] == [w.text for w in want] and all(w.text for w in want)


def test_prefix_refuses_audio_of_another_setting(model, processor, recording):
    apply_audio_compression(model, "pool:2")
    audio = prefix_mod.encode_audio(model, recording[1], recording[2])
    apply_audio_compression(model, "ltbm:0.5")  # same count (938), other tokens: refused, not silently mixed
    prefix, suffixes = _parts(processor, recording, "ltbm:0.5", LOGITS_PREFIX)
    with pytest.raises(ValueError, match="audio encoded with pool:2, model set to ltbm:0.5"):
        prefix_mod.score_questions(model, prefix, suffixes, audio, option_token_ids(processor.tokenizer))


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["pool:3", "ltbm:0.5", "ltbm:0.7:global"])
def test_cuda_equals_cpu(spec):
    torch.manual_seed(0)
    x, lengths = torch.randn(4, 750, 64), torch.tensor([750, 750, 300, 1])
    cfg = AudioCompression.parse(spec)
    cpu, gpu = compress(x, lengths, cfg), compress(x.cuda(), lengths.cuda(), cfg)
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu().to(a.dtype), a, atol=1e-5, rtol=1e-5)


def test_largest_positions_use_time(model):
    """The beyond-context check sees time-aligned positions: 20 pooled tokens standing for 40 reach as far as 40."""
    from vlat.rope import largest_positions

    kw, _ = _kw(model, "pool:2")
    ids = kw["input_ids"]
    tokens = encode_audio(find_audio_model(model), kw["input_features"], kw["feature_attention_mask"], "pool:2")
    times = time_layout(ids == model.config.audio_token_index, tokens)
    mask = torch.ones_like(ids)
    want = {"vanilla": 46.0, "partial_pi": 16.0, "whole_pi": 46 / 4}  # text after at p + n = 43 (.. 46); p + S = 13
    for method, top in want.items():
        apply_audio_rope(model, AudioRopeConfig(method, original_audio_tokens=10))
        apply_audio_compression(model, "pool:2")
        assert largest_positions(model, ids, mask, times).tolist() == [top]
