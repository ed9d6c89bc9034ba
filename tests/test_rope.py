"""vlat.rope on each model family's tiny offline checkpoint (Qwen2-Audio, Audio Flamingo 3, Voxtral): hand-computed
positions, parity with Hugging Face, padding, decoding.

Voxtral's encoder turns every whole 30-s window into 375 tokens, so the short audio runs here (8-40 tokens) keep
their token embeddings on it (the positions depend on the ids alone); tests/test_voxtral.py checks real windows."""

import copy

import pytest
import torch
import transformers
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from vlat.models import VOXTRAL, family_of_model, forward_kwargs
from vlat.rope import AudioRopeConfig, apply_audio_rope, find_audio_model, set_virtual_audio_tokens, warp_positions
from vlat.rope.hf_cache import cache_of

pytestmark = pytest.mark.seam  # transformers / peft internals: also run on the oldest allowed versions


def _sample(model, n_audio, pre=(5, 6, 7), post=(8, 9, 10, 11), seed=0):
    """Token ids with one audio run of n_audio tokens, and matching mel features (4 frames per audio token)."""
    aid = find_audio_model(model).config.audio_token_id
    ids = torch.tensor([*pre, *([aid] * n_audio), *post])
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(128, 3000, generator=g)
    fmask = torch.zeros(3000, dtype=torch.long)
    fmask[: 4 * n_audio] = 1
    return ids, feats, fmask


def _batch(samples, side):
    width = max(len(s[0]) for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (x, _, _) in enumerate(samples):
        sl = slice(width - len(x), width) if side == "left" else slice(0, len(x))
        ids[i, sl], mask[i, sl] = x, 1
    feats = torch.stack([s[1] for s in samples])
    fmask = torch.stack([s[2] for s in samples])
    return dict(input_ids=ids, attention_mask=mask, input_features=feats, feature_attention_mask=fmask)


def _logits(model, **kw):
    with torch.no_grad():
        return model(**_named(model, kw)).logits


def _named(model, kw):
    """``kw`` with the mel-frame mask under the family's own name (``input_features_mask`` on Audio Flamingo 3);
    on Voxtral without features (see the module's docstring)."""
    out = forward_kwargs(model, kw)
    if family_of_model(model) is VOXTRAL:
        out.pop("input_features", None)
    return out


FIXTURES = {"qwen2_audio": "tiny_model", "audioflamingo3": "tiny_af3_model", "voxtral": "tiny_voxtral_model"}


@pytest.fixture(params=list(FIXTURES))
def model(request):
    m = copy.deepcopy(request.getfixturevalue(FIXTURES[request.param]))
    yield m
    apply_audio_rope(m, AudioRopeConfig(method="vanilla"))


# --- pure position math, by hand -------------------------------------------------------------------------------


def test_positions_by_hand():
    a = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]]).bool()
    raw = torch.arange(8)[None]
    # n=4 <= S=7: untouched (inference); VLAT stretches: linspace(2, 8, 4) = 2,4,6,8, text after shifted by +3
    untouched = warp_positions(a, raw, 7)
    assert untouched.positions.tolist() == [list(range(8))] and not untouched.warped_audio.any()
    vlat = warp_positions(a, raw, 7, warp_all=True)
    assert vlat.positions.tolist() == [[0, 1, 2, 4, 6, 8, 9, 10]] and vlat.shift.tolist() == [3.0]
    # n=4 > S=2: compress onto linspace(2, 3, 4); text after continues at p + S = 4
    comp = warp_positions(a, raw, 2)
    torch.testing.assert_close(comp.positions, torch.tensor([[0, 1, 2, 2 + 1 / 3, 2 + 2 / 3, 3, 4, 5]]))
    assert comp.warped_audio.tolist() == [[False, False, True, True, True, True, False, False]]
    # two runs in one sample, shifts accumulate: run 1 (p=0, n=3) -> 0, .5, 1; text 3 -> 2;
    # run 2 (raw p=4 -> 3, n=4) -> 3, 3.33, 3.67, 4; text raw 8 -> 5
    a2 = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 1, 0]]).bool()
    two = warp_positions(a2, torch.arange(9)[None], 2)
    torch.testing.assert_close(two.positions, torch.tensor([[0, 0.5, 1, 2, 3, 3 + 1 / 3, 3 + 2 / 3, 4, 5]]))
    assert two.shift.tolist() == [-3.0]


def test_per_sample_spans_by_hand():
    # VLAT per sample: row 0 stretches n=4 over S=7 (2, 4, 6, 8; text +3), row 1 over S=10 (2, 5, 8, 11; text +6)
    a = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]] * 2).bool()
    raw = torch.arange(8).expand(2, 8)
    out = warp_positions(a, raw, (7, 10), warp_all=True)
    assert out.positions.tolist() == [[0, 1, 2, 4, 6, 8, 9, 10], [0, 1, 2, 5, 8, 11, 12, 13]]
    assert out.shift.tolist() == [3.0, 6.0]
    with pytest.raises(ValueError, match="3 per-sample spans for a batch of 2"):
        warp_positions(a, raw, (7, 10, 12), warp_all=True)


def test_positions_respect_left_padding():
    # left-padded row: raw positions count real tokens only, so warping equals the unpadded row's
    a = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0, 0]]).bool()
    raw = torch.tensor([[1, 1, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 1, 1]])
    out = warp_positions(a, raw, 2).positions
    torch.testing.assert_close(out[0, 2:], torch.tensor([0, 1, 1 + 1 / 3, 1 + 2 / 3, 2, 3]))
    torch.testing.assert_close(out[1, :6], out[0, 2:])


def _captured_cos_sin(model, **kw):
    rot = find_audio_model(model).language_model.rotary_emb
    seen = {}
    handle = rot.register_forward_hook(lambda m, a, out: seen.update(cos=out[0], sin=out[1]))
    _logits(model, **kw)
    handle.remove()
    return seen["cos"], seen["sin"]


def test_cos_sin_by_hand(model):
    # p=3, n=40, S=10, cutoff 2, t=1.44: pairs 0-1 raw positions, pairs 2-7 warped; audio cos/sin scaled by 1/1.2
    ids, feats, fmask = _sample(model, 40)
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=2, temperature=1.44))
    cos, sin = _captured_cos_sin(
        model, input_ids=ids[None], input_features=feats[None], feature_attention_mask=fmask[None]
    )
    inv_freq = torch.tensor([10000 ** (-2 * i / 16) for i in range(8)])
    raw = torch.arange(47, dtype=torch.float64)
    warped = torch.cat([raw[:3], torch.linspace(3, 12, 40, dtype=torch.float64), 13 + torch.arange(4.0)])
    scale = torch.tensor([1.0] * 3 + [1 / 1.2] * 40 + [1.0] * 4)
    pos = torch.stack([raw if i < 2 else warped for i in range(8)], dim=-1)  # (T, 8)
    ang = pos * inv_freq.double()
    expected_cos = (torch.cat([ang, ang], -1).cos() * scale[:, None].double()).float()
    expected_sin = (torch.cat([ang, ang], -1).sin() * scale[:, None].double()).float()
    torch.testing.assert_close(cos[0], expected_cos, atol=2e-6, rtol=0)
    torch.testing.assert_close(sin[0], expected_sin, atol=2e-6, rtol=0)


def test_short_run_untouched_and_vlat_stretches(model):
    ids, feats, fmask = _sample(model, 8)
    kw = dict(input_ids=ids[None], input_features=feats[None], feature_attention_mask=fmask[None])
    base_cos, _ = _captured_cos_sin(model, **kw)
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=0, temperature=2.0))
    cos, _ = _captured_cos_sin(model, **kw)
    assert torch.equal(cos, base_cos)  # n=8 <= S=10: no warp, no temperature
    set_virtual_audio_tokens(model, 22)  # VLAT: 8 tokens stretched over linspace(3, 24, 8) = 3, 6, ..., 24
    cos, _ = _captured_cos_sin(model, **kw)
    pos = torch.tensor([0, 1, 2, *range(3, 25, 3), 25, 26, 27, 28], dtype=torch.float64)
    inv_freq = torch.tensor([10000 ** (-2 * i / 16) for i in range(8)], dtype=torch.float64)
    ang = pos[:, None] * inv_freq
    scale = torch.tensor([1.0] * 3 + [2**-0.5] * 8 + [1.0] * 4, dtype=torch.float64)
    torch.testing.assert_close(cos[0], (torch.cat([ang, ang], -1).cos() * scale[:, None]).float(), atol=2e-6, rtol=0)


# --- vanilla ------------------------------------------------------------------------------------------------------


def test_vanilla_is_bit_identical_and_restores(model):
    ids, feats, fmask = _sample(model, 40)
    kw = dict(
        input_ids=ids[None],
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        input_features=feats[None],
        feature_attention_mask=fmask[None],
    )
    stock = _logits(model, **kw)
    apply_audio_rope(model, AudioRopeConfig("vanilla"))
    assert torch.equal(_logits(model, **kw), stock)
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=2, temperature=1.3))
    warped = _logits(model, **kw)
    assert not torch.allclose(warped, stock)
    apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=10))  # reconfigure, no stacking
    assert len(find_audio_model(model)._forward_pre_hooks) == 1
    apply_audio_rope(model, AudioRopeConfig("vanilla"))
    assert torch.equal(_logits(model, **kw), stock)
    assert not find_audio_model(model)._forward_pre_hooks


# --- whole-context baselines = Hugging Face's own rope types ------------------------------------------------------


@pytest.mark.parametrize("method,rope_type", [("whole_pi", "linear"), ("whole_yarn", "yarn")])
def test_whole_methods_match_hf_rope(model, method, rope_type):
    ids, feats, fmask = _sample(model, 40)
    kw = dict(
        input_ids=ids[None],
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        input_features=feats[None],
        feature_attention_mask=fmask[None],
    )
    hf = copy.deepcopy(model)
    conf = copy.deepcopy(hf.config.text_config)
    conf.rope_parameters = {"rope_type": rope_type, "rope_theta": 10000.0, "factor": 4.0}
    if rope_type == "yarn":
        conf.rope_parameters["original_max_position_embeddings"] = conf.max_position_embeddings
    find_audio_model(hf).language_model.rotary_emb = Qwen2RotaryEmbedding(conf)
    expected = _logits(hf, **kw)
    apply_audio_rope(model, AudioRopeConfig(method, original_audio_tokens=10))  # 40 audio tokens / 10 -> factor 4
    hf_cos, _ = _captured_cos_sin(hf, **kw)
    cos, _ = _captured_cos_sin(model, **kw)
    torch.testing.assert_close(cos, hf_cos, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(_logits(model, **kw), expected, atol=1e-5, rtol=1e-5)
    if rope_type == "yarn":  # attention factor 0.1 ln 4 + 1 is applied
        assert cos.abs().max() > 1.1


# --- batching, padding, decoding ----------------------------------------------------------------------------------

CONFIGS = [
    AudioRopeConfig("partial_pi", original_audio_tokens=10),
    AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=3, temperature=1.3),
    AudioRopeConfig("whole_pi", original_audio_tokens=10),
    AudioRopeConfig("whole_yarn", original_audio_tokens=10),
    AudioRopeConfig("partial_yarn", original_audio_tokens=10, cutoff_dim=3, temperature=1.3, virtual_audio_tokens=30),
]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.method}-v{c.virtual_audio_tokens}")
def test_padded_batch_equals_each_alone(model, cfg, side):
    apply_audio_rope(model, cfg)
    samples = [_sample(model, 40, seed=1), _sample(model, 24, pre=(5, 6), post=(9,), seed=2)]
    batch = _batch(samples, side)
    out = _logits(model, **batch)
    cos, _ = _captured_cos_sin(model, **batch)  # positions themselves, not only logits (RoPE hides offsets)
    for i, (ids, feats, fmask) in enumerate(samples):
        kw = dict(
            input_ids=ids[None],
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            input_features=feats[None],
            feature_attention_mask=fmask[None],
        )
        alone = _logits(model, **kw)[0]
        real = batch["attention_mask"][i].bool()
        torch.testing.assert_close(out[i][real], alone, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(cos[i][real], _captured_cos_sin(model, **kw)[0][0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["partial_pi", "whole_yarn"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_per_sample_virtual_spans_equal_each_alone(model, method, side):
    """A batch with per-sample virtual lengths (VLAT per sample) gives each row what it gives alone with its span."""
    samples = [_sample(model, 40, seed=1), _sample(model, 24, pre=(5, 6), post=(9,), seed=2)]
    apply_audio_rope(model, AudioRopeConfig(method, original_audio_tokens=10))
    set_virtual_audio_tokens(model, (30, 70))
    batch = _batch(samples, side)
    out = _logits(model, **batch)
    for i, (ids, feats, fmask) in enumerate(samples):
        set_virtual_audio_tokens(model, (30, 70)[i])
        kw = dict(input_ids=ids[None], input_features=feats[None], feature_attention_mask=fmask[None])
        real = batch["attention_mask"][i].bool()
        torch.testing.assert_close(out[i][real], _logits(model, **kw)[0], atol=2e-5, rtol=1e-4)
    set_virtual_audio_tokens(model, 30)  # one span: row 1 differs from its per-sample result
    assert not torch.allclose(_logits(model, **batch)[1], out[1], atol=1e-4)


@pytest.mark.parametrize("cfg", [AudioRopeConfig("vanilla"), *CONFIGS[:4]], ids=lambda c: c.method)
def test_generate_with_cache_equals_full_forward(model, cfg):
    apply_audio_rope(model, cfg)
    samples = [_sample(model, 40, seed=1), _sample(model, 24, pre=(5, 6), post=(9,), seed=2)]
    batch = _batch(samples, "left")
    out = model.generate(
        **_named(model, batch),
        max_new_tokens=6,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        min_new_tokens=6,
    )
    seq = out.sequences
    mask = torch.cat(
        [batch["attention_mask"], torch.ones(2, seq.shape[1] - batch["input_ids"].shape[1], dtype=torch.long)], dim=1
    )
    kw = dict(input_features=batch["input_features"], feature_attention_mask=batch["feature_attention_mask"])
    full = _logits(model, input_ids=seq, attention_mask=mask, **kw)
    prompt = batch["input_ids"].shape[1]
    for step, step_logits in enumerate(out.logits):
        torch.testing.assert_close(step_logits, full[:, prompt - 1 + step], atol=2e-5, rtol=1e-4)
    # no state leaks: a second, different call gives the same as on a fresh model
    again = model.generate(**_named(model, _batch(samples[1:], "left")), max_new_tokens=3, do_sample=False)
    fresh = copy.deepcopy(model).generate(
        **_named(model, _batch(samples[1:], "left")), max_new_tokens=3, do_sample=False
    )
    assert torch.equal(again, fresh)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_the_seam_finds_the_cache_under_either_name(model, name):
    """transformers >= 5.24 calls the cache ``cache`` (``past_key_values`` is its deprecated alias), older versions
    only ``past_key_values``: a decoding step given the cache under the installed version's name, or under the
    alias where one exists, continues from the cached plan and equals the full forward."""
    import inspect

    forward = inspect.signature(find_audio_model(model).forward).parameters
    if name not in forward and "cache" not in forward:
        pytest.skip(f"transformers {transformers.__version__} does not take `{name}`")
    apply_audio_rope(model, CONFIGS[1])
    ids, feats, fmask = _sample(model, 40, seed=3)
    full_ids = torch.cat([ids, torch.tensor([12])])[None]
    kw = dict(input_features=feats[None], feature_attention_mask=fmask[None])
    full = _logits(model, input_ids=full_ids, attention_mask=torch.ones_like(full_ids), **kw)
    with torch.no_grad():
        prompt = model(
            input_ids=ids[None], attention_mask=torch.ones_like(ids[None]), use_cache=True, **_named(model, kw)
        )
        kv = cache_of(prompt)
        assert kv is not None and kv.get_seq_length() == len(ids)
        step = model(input_ids=full_ids[:, -1:], attention_mask=torch.ones_like(full_ids), use_cache=True, **{name: kv})
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementations_agree(model, attn):
    model.set_attn_implementation(attn)
    apply_audio_rope(model, CONFIGS[1])
    batch = _batch([_sample(model, 40, seed=1), _sample(model, 24, seed=2)], "right")
    out = _logits(model, **batch)
    model.set_attn_implementation("sdpa" if attn == "eager" else "eager")
    other = _logits(model, **batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], other[real], atol=2e-5, rtol=1e-4)


def test_bf16_forward(model):
    model.to(torch.bfloat16)
    apply_audio_rope(model, CONFIGS[1])
    ids, feats, fmask = _sample(model, 40)
    cos, _ = _captured_cos_sin(
        model, input_ids=ids[None], input_features=feats[None], feature_attention_mask=fmask[None]
    )
    assert cos.dtype == torch.bfloat16 and torch.isfinite(cos).all()


def test_lora_gradients_with_checkpointing(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.q_proj"))
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    apply_audio_rope(peft_model, CONFIGS[4])
    peft_model.train()
    batch = _batch([_sample(model, 40, seed=1), _sample(model, 24, seed=2)], "right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = peft_model(**_named(model, batch), labels=labels).loss
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert not any("audio_tower" in n for n, _ in peft_model.named_parameters() if "lora_" in n)


# --- invalid configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(method="yarn"), "method"),
        (dict(method="partial_yarn", cutoff_dim=-1), "cutoff_dim"),
        (dict(method="partial_yarn", temperature=0.0), "temperature"),
        (dict(method="partial_yarn", temperature=-1.0), "temperature"),
        (dict(original_audio_tokens=0), "original_audio_tokens"),
        (dict(virtual_audio_tokens=-5), "virtual_audio_tokens"),
        (dict(virtual_audio_tokens=(30, 0)), "virtual_audio_tokens"),
        (dict(virtual_audio_tokens=()), "virtual_audio_tokens"),
        (dict(method="partial_pi", cutoff_dim=8), "cutoff_dim"),
    ],
)
def test_invalid_configs(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AudioRopeConfig(**kwargs)


def test_cutoff_beyond_head_dim(model):
    with pytest.raises(ValueError, match=r"cutoff_dim: 9 is outside \[0, 8\]"):
        apply_audio_rope(model, AudioRopeConfig("partial_yarn", cutoff_dim=9))
    apply_audio_rope(model, AudioRopeConfig("partial_yarn", cutoff_dim=8))  # all pairs raw: allowed
