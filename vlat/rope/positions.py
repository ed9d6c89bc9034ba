"""Pure position math of the audio-only extension: token layout in, warped positions out (arXiv 2510.15231, §3.1).

For each sample and each contiguous run of audio tokens (first raw position p, length n) mapped onto a span of S
positions: text before the run keeps its positions; the j-th audio token gets ``p + j (S-1)/(n-1)``
(``linspace(p, p+S-1, n)``); every later token is shifted by ``S - n``. Runs are warped independently and shifts
accumulate. A run is left untouched (no warp, no temperature) when ``n <= S``, unless ``warp_all`` (VLAT) is set.
S is one number for the whole batch, or one per sample (VLAT with per-sample virtual lengths).

**Compressed audio** (:mod:`vlat.audio.compression`): a run of m tokens then stands for n > m tokens of the uncompressed
25 tokens/s grid, and its tokens are placed by *time*, not by count: token j, whose time in the run is ``c_j``
(the mean uncompressed index it covers, :class:`AudioTimes`), gets ``p + c_j`` unwarped and ``p + c_j (S-1)/(n-1)``
warped; the run occupies n (or S) positions as it would uncompressed, so later tokens are shifted by ``n - m``
(or ``S - m``), and whether it is warped depends on n. The same seconds land on the same positions with or without
compression. Without times, ``c_j = j`` and ``n = m``: the formulas above.

Everything is vectorised over the batch (no host synchronisation), so it costs a few small kernels per forward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vlat.audio.tokens import AudioTimes


class WarpedPositions(NamedTuple):
    positions: torch.Tensor  # (B, T) float32: positions used by interpolated frequency pairs
    warped_audio: torch.Tensor  # (B, T) bool: audio tokens inside a warped run (they take the temperature)
    shift: torch.Tensor  # (B,) float32: total shift (S or n) - m summed over the runs (continues decoding)
    audio_time: torch.Tensor  # (B,) float32: uncompressed audio tokens n summed over the runs


def raw_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token = number of real tokens before it; padding gets 1 (as ``generate`` does). (B, T)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


Span = int | tuple[int, ...]  # one span for the batch, or one per sample


def span_tensor(span: Span, bsz: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``span`` as a float32 (B,) tensor; a per-sample span must have one entry per sample."""
    if isinstance(span, tuple | list):
        if len(span) != bsz:
            raise ValueError(f"span: {len(span)} per-sample spans for a batch of {bsz}")
        return torch.tensor(span, dtype=torch.float32, device=device)
    return torch.full((bsz,), float(span), device=device)


def warp_positions(
    audio_mask: torch.Tensor,
    raw: torch.Tensor,
    span: Span | None,
    warp_all: bool = False,
    times: AudioTimes | None = None,
) -> WarpedPositions:
    """Warp each contiguous audio run of ``audio_mask`` (B, T) onto ``span`` positions; see the module docstring.

    ``raw`` (B, T) are the unwarped positions (consecutive inside an audio run). ``span`` None warps nothing (with
    ``times``: the time-aligned unwarped positions); a tuple gives each sample its own span. Positions are returned
    relative to the same origin as ``raw``; a caller continuing a cached sequence adds the shift of the earlier
    chunks.
    """
    a = audio_mask.bool()
    bsz, seqlen = a.shape
    raw = raw.to(torch.float32)
    prev = torch.nn.functional.pad(a[:, :-1], (1, 0), value=False)
    start = a & ~prev
    run_id = start.long().cumsum(-1)  # (B, T): runs started at or before each token; run of an audio token
    slots = seqlen + 1
    af = a.to(torch.float32)
    n = torch.zeros(bsz, slots, device=a.device).scatter_add_(1, run_id, af)  # (B, R) run lengths, slot 0 unused
    count = af.cumsum(-1)
    first = torch.zeros(bsz, slots, device=a.device).scatter_add_(1, run_id, count * start)
    j = (count - first.gather(1, run_id)) * af  # (B, T) index inside the run (0 for text)

    if times is None:  # uncompressed: time = index, n = count
        c, n_time = j, n
    else:
        c = times.centre.to(torch.float32) * af
        n_time = torch.zeros(bsz, slots, device=a.device).scatter_reduce_(1, run_id, times.stop * af, "amax")

    is_run = n > 0
    s = span_tensor(span or 0, bsz, a.device)[:, None].expand_as(n)  # (B, R)
    if span is None:
        warp = torch.zeros_like(is_run)
    else:
        warp = is_run & ((n_time > s) if not warp_all else torch.ones_like(is_run))
    s_eff = torch.where(warp, s, n_time)
    delta = s_eff - n  # (B, R) shift added after each run
    step = torch.where(warp & (n_time > 1), (s_eff - 1) / (n_time - 1).clamp(min=1), torch.ones_like(n))
    cum_incl = delta.cumsum(-1)
    cum_excl = cum_incl - delta

    audio_pos = raw - j + cum_excl.gather(1, run_id) + c * step.gather(1, run_id)
    text_pos = raw + cum_incl.gather(1, run_id)
    positions = torch.where(a, audio_pos, text_pos)
    warped_audio = a & warp.gather(1, run_id)
    return WarpedPositions(positions, warped_audio, cum_incl[:, -1], n_time[:, 1:].sum(-1))


def whole_factor(audio_tokens: torch.Tensor, span: Span, clamp: bool = True) -> torch.Tensor:
    """Per-sample whole-context factor s = audio tokens / span (at least 1 unless ``clamp`` is off). (B,)."""
    s = audio_tokens.to(torch.float32) / span_tensor(span, audio_tokens.shape[0], audio_tokens.device)
    return s.clamp(min=1.0) if clamp else s
