"""Install the audio-only RoPE on a stock Hugging Face audio-language model of a supported family, at one seam.

The seam is the family's inner model (:mod:`vlat.models`: ``Qwen2AudioModel``, ``AudioFlamingo3Model``): its
``language_model.rotary_emb`` is swapped for :class:`AudioRotaryEmbedding`, and a forward pre-hook on the inner model
(the only place that still sees ``input_ids``) prepares that call's position plan from the token layout. Nothing
else of the stock classes changes.

Per call, the hook:
- makes the attention mask and raw positions explicit (raw position = real tokens before it, so left and right
  padding both work; transformers would otherwise infer packed sequences from non-consecutive positions);
- finds the audio runs (``audio_token_id`` tokens) and computes warped positions / per-sample factors;
- continues a cached sequence from the state stored *on the KV cache object* of that sequence (total shift and
  audio-token count), so ``generate()`` and prefix reuse are exact and nothing leaks between calls or batches;
- for a prompt prefilled in chunks (:func:`plan_chunked_prefill`), uses the plan of the *whole* prompt stored on the
  cache, sliced to the chunk: an audio run cut by a chunk boundary is warped as one run (same positions, temperature
  and whole-context factor as one long forward).

A 4-D attention mask (packed questions on a shared prefix, :mod:`vlat.evaluation.prefix`) needs explicit
``position_ids``; every token of such a call is real.

Audio-token compression (:func:`apply_audio_compression`, :mod:`vlat.audio.compression`) uses the same seam: when a call
brings ``input_features``, the hook encodes and compresses them (:func:`vlat.audio.tokens.encode_audio`), places them
in the ``<|AUDIO|>`` run as ``inputs_embeds`` (the stock forward then skips its own audio path) and plans
time-aligned positions from each token's time. The prompt must hold the compressed count of audio tokens
(:func:`vlat.data.prompts.build_mcqa_example` with the same setting).
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

from vlat.audio.compression import AudioCompression
from vlat.audio.tokens import AudioTimes
from vlat.models import family_of_model, find_audio_model
from vlat.rope.config import AudioRopeConfig
from vlat.rope.embedding import AudioRotaryEmbedding, RopePlan, temperature_scale
from vlat.rope.hf_cache import cache_in, cache_of
from vlat.rope.positions import raw_positions, warp_positions, whole_factor

_HOOKS_ATTR = "_vlat_rope_hooks"
_STATE_ATTR = "_vlat_rope_state"
_PREFILL_ATTR = "_vlat_rope_prefill"


def apply_audio_rope(model: nn.Module, cfg: AudioRopeConfig) -> nn.Module:
    """Configure the audio-only RoPE of ``model`` in place and return it. ``vanilla`` restores stock behaviour
    (with no compression set). Calling it again reconfigures; patches never stack."""
    return _install(model, cfg, current_compression(model))


def apply_audio_compression(model: nn.Module, compression: AudioCompression | str | None) -> nn.Module:
    """Compress the audio tokens of every later call that brings ``input_features`` (``none``: stock), keeping the
    RoPE method; positions become time-aligned under every method, vanilla included."""
    return _install(model, current_config(model), AudioCompression.parse(compression))


def current_compression(model: nn.Module) -> AudioCompression:
    rotary = installed_rope(model)
    return rotary.compression if rotary is not None else AudioCompression()


def _install(model: nn.Module, cfg: AudioRopeConfig, compression: AudioCompression) -> nn.Module:
    audio_model = find_audio_model(model)
    lm = audio_model.language_model
    text_config = lm.config
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    cfg.check_head_dim(head_dim)

    for handle in getattr(audio_model, _HOOKS_ATTR, ()):
        handle.remove()
    setattr(audio_model, _HOOKS_ATTR, ())
    current = lm.rotary_emb
    stock = current.stock if isinstance(current, AudioRotaryEmbedding) else current
    if cfg.method == "vanilla" and not compression.active:
        lm.rotary_emb = stock
        return model

    rotary = AudioRotaryEmbedding(stock, text_config, cfg)
    rotary.compression = compression
    lm.rotary_emb = rotary
    audio_token_id = audio_model.config.audio_token_id
    pre = audio_model.register_forward_pre_hook(partial(_before_forward, rotary, audio_token_id), with_kwargs=True)
    post = audio_model.register_forward_hook(partial(_after_forward, rotary), with_kwargs=True)
    setattr(audio_model, _HOOKS_ATTR, (pre, post))
    return model


def installed_rope(model: nn.Module) -> AudioRotaryEmbedding | None:
    rotary = find_audio_model(model).language_model.rotary_emb
    return rotary if isinstance(rotary, AudioRotaryEmbedding) else None


def current_config(model: nn.Module) -> AudioRopeConfig:
    rotary = installed_rope(model)
    return rotary.cfg if rotary is not None else AudioRopeConfig(method="vanilla")


def set_virtual_audio_tokens(model: nn.Module, virtual_audio_tokens: int | tuple[int, ...] | None) -> None:
    """VLAT: map every audio run onto ``virtual_audio_tokens`` positions (None = back to inference behaviour; a
    tuple: one number per sample of the next batches)."""
    rotary = installed_rope(model)
    if rotary is None:
        if virtual_audio_tokens is None:
            return
        raise ValueError("virtual_audio_tokens: install a non-vanilla method with apply_audio_rope first")
    rotary.cfg = rotary.cfg.with_virtual(virtual_audio_tokens)
    rotary.reset_cache()


def _plan(
    cfg: AudioRopeConfig, audio: torch.Tensor, position_ids: torch.Tensor, prior, times: AudioTimes | None = None
) -> tuple[RopePlan, tuple]:
    """The plan of one call (B, T) continuing a sequence whose earlier tokens left state ``prior``, and the state
    after it: (shift of warped positions, shift of unwarped positions, uncompressed audio tokens so far), all (B,).

    ``times`` (compressed audio): unwarped positions are time-aligned too, and replace ``position_ids``. Unwarped
    positions continue with their own shift, which stays 0 without compression (then ``raw`` equals
    ``position_ids`` exactly)."""
    prior_shift, prior_raw, prior_audio = prior
    if times is not None:
        aligned = warp_positions(audio, position_ids, None, times=times)
        raw, raw_shift, audio_time = (
            aligned.positions + prior_raw[:, None],
            prior_raw + aligned.shift,
            aligned.audio_time,
        )
    else:
        raw, raw_shift, audio_time = position_ids.to(torch.float32) + prior_raw[:, None], prior_raw, audio.sum(-1)
    if cfg.method == "vanilla":
        return RopePlan(raw=raw), (prior_shift, raw_shift, prior_audio + audio_time)
    if cfg.method.startswith("whole"):
        total_audio = prior_audio + audio_time
        factor = whole_factor(total_audio, cfg.span, clamp=cfg.virtual_audio_tokens is None)
        return RopePlan(raw=raw, factor=factor), (prior_shift, raw_shift, total_audio)
    warped = warp_positions(audio, position_ids, cfg.span, cfg.virtual_audio_tokens is not None, times)
    positions = warped.positions + prior_shift[:, None]
    plan = RopePlan(raw=raw, positions=positions, scale=temperature_scale(warped.warped_audio, cfg.temperature))
    return plan, (prior_shift + warped.shift, raw_shift, prior_audio + warped.audio_time)


def plan_chunked_prefill(model: nn.Module, input_ids: torch.Tensor, cache, times: AudioTimes | None = None) -> None:
    """Prepare an empty KV cache for prefilling ``input_ids`` (B, T, no padding) in consecutive chunks.

    The plan of the whole prompt is computed here and stored on ``cache``; each chunk's forward (``input_ids`` of
    the chunk, with ``cache`` as its KV cache) uses its slice, so the result equals one forward over the whole prompt.
    ``times``: the audio tokens' times when they are compressed (:func:`vlat.audio.tokens.time_layout`). Vanilla
    RoPE without compression needs no plan (stock positions are already exact in chunks)."""
    rotary = installed_rope(model)
    if rotary is None:
        return
    if cache.get_seq_length() != 0:
        raise ValueError("plan_chunked_prefill: the cache must be empty")
    bsz, seqlen = input_ids.shape
    device = input_ids.device
    audio = input_ids == find_audio_model(model).config.audio_token_id
    raw = torch.arange(seqlen, device=device).expand(bsz, seqlen)
    zeros = torch.zeros(bsz, device=device)
    plan, state = _plan(rotary.cfg, audio, raw, (zeros, zeros, zeros), times)
    setattr(cache, _PREFILL_ATTR, (seqlen, plan, state))


def _chunk_of(prefill, past_len: int, seqlen: int) -> tuple[RopePlan, tuple]:
    total, plan, state = prefill
    if past_len + seqlen > total:
        raise RuntimeError(f"chunked prefill: chunk ends at {past_len + seqlen}, beyond the planned prompt ({total})")
    sl = slice(past_len, past_len + seqlen)
    cut = lambda t: t[:, sl] if t is not None else None  # noqa: E731
    return RopePlan(raw=cut(plan.raw), positions=cut(plan.positions), scale=cut(plan.scale), factor=plan.factor), state


def _compress_inputs(rotary: AudioRotaryEmbedding, module, input_ids, audio_token_id: int, kwargs) -> AudioTimes:
    """Encode and compress this call's audio into ``inputs_embeds``; the audio tokens' times."""
    from vlat.audio.tokens import encode_audio, prompt_embeds, time_layout

    mask = family_of_model(module).feature_mask(kwargs)
    tokens = encode_audio(module, kwargs["input_features"], mask, rotary.compression)
    audio = input_ids == audio_token_id
    if int(audio.sum()) != len(tokens):
        raise ValueError(
            f"audio compression {rotary.compression}: the prompt holds {int(audio.sum())} <|AUDIO|> tokens but its "
            f"audio gives {len(tokens)}; build prompts with the same compression setting"
        )
    kwargs["inputs_embeds"] = prompt_embeds(module, input_ids, tokens)
    kwargs["input_features"] = None
    return time_layout(audio, tokens)


def _before_forward(rotary: AudioRotaryEmbedding, audio_token_id: int, module, args, kwargs):
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    times = None
    if (
        rotary.compression.active
        and kwargs.get("input_features") is not None
        and input_ids is not None
        and kwargs.get("inputs_embeds") is None
        and input_ids.shape[1] != 1
    ):
        times = _compress_inputs(rotary, module, input_ids, audio_token_id, kwargs)
    embeds = kwargs.get("inputs_embeds")
    ref = input_ids if input_ids is not None else embeds
    bsz, seqlen = ref.shape[:2]
    device = ref.device
    past = cache_in(kwargs)
    past_len = past.get_seq_length() if past is not None else 0

    attention_mask = kwargs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones(bsz, past_len + seqlen, dtype=torch.long, device=device)
        kwargs["attention_mask"] = attention_mask
    position_ids = kwargs.get("position_ids")
    if attention_mask.dim() == 4:
        if position_ids is None:
            raise ValueError("audio RoPE: a 4-D attention_mask needs explicit position_ids")
        real = torch.ones(bsz, seqlen, dtype=torch.bool, device=device)
    else:
        real = attention_mask[:, -seqlen:] != 0
    if position_ids is None:
        position_ids = raw_positions(attention_mask)[:, -seqlen:]
        kwargs["position_ids"] = position_ids

    prefill = getattr(past, _PREFILL_ATTR, None) if past is not None else None
    if prefill is not None and past_len < prefill[0]:  # a chunk of a planned prefill
        rotary.plan, state = _chunk_of(prefill, past_len, seqlen)
    else:
        if input_ids is not None:
            audio = (input_ids == audio_token_id) & real
        else:  # a continuation given as embeddings carries no audio tokens of its own
            audio = torch.zeros(bsz, seqlen, dtype=torch.bool, device=device)
        prior = getattr(past, _STATE_ATTR, None) if past is not None else None
        prior = prior if prior is not None else (torch.zeros(bsz, device=device),) * 3
        rotary.plan, state = _plan(rotary.cfg, audio, position_ids, prior, times)
    rotary.plan_shape = (bsz, seqlen)
    rotary.pending_state = state
    return args, kwargs


def _after_forward(rotary: AudioRotaryEmbedding, module, args, kwargs, output):
    state, rotary.pending_state, rotary.plan = rotary.pending_state, None, None
    cache = cache_of(output)
    if cache is not None and state is not None:
        setattr(cache, _STATE_ATTR, state)
        prefill = getattr(cache, _PREFILL_ATTR, None)
        if prefill is not None and cache.get_seq_length() >= prefill[0]:
            delattr(cache, _PREFILL_ATTR)  # the prompt is complete: later calls continue from the state
    return output


def largest_positions(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, times: AudioTimes | None = None
) -> torch.Tensor:
    """Largest position each row reaches under the model's active method (what RoPE sees), (B,); ``times`` for
    compressed audio (its positions are time-aligned)."""
    audio_model = find_audio_model(model)
    cfg = current_config(model)
    raw = raw_positions(attention_mask)
    real = attention_mask != 0
    audio = (input_ids == audio_model.config.audio_token_id) & real
    if cfg.method.startswith(("vanilla", "whole")):
        aligned = warp_positions(audio, raw, None, times=times)  # raw positions (time-aligned when compressed)
        pos = aligned.positions
        if cfg.method != "vanilla":
            pos = pos / whole_factor(aligned.audio_time, cfg.span, clamp=cfg.virtual_audio_tokens is None)[:, None]
    else:
        pos = warp_positions(audio, raw, cfg.span, cfg.virtual_audio_tokens is not None, times).positions
    return pos.masked_fill(~real, float("-inf")).amax(-1)


def warn_if_beyond_context(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, times: AudioTimes | None = None
) -> bool:
    """Warn (not fail: the paper evaluates exactly this) when a row's positions pass ``max_position_embeddings``."""
    limit = find_audio_model(model).language_model.config.max_position_embeddings
    top = float(largest_positions(model, input_ids, attention_mask, times).max())
    if top >= limit:
        warnings.warn(
            f"sequence reaches position {top:.0f} under {current_config(model).method} RoPE, beyond the text model's "
            f"max_position_embeddings={limit}; quality may degrade (consider partial_pi or whole_yarn)",
            stacklevel=2,
        )
        return True
    return False
