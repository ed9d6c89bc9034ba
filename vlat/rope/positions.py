"""Pure position math of the audio-only extension: token layout in, warped positions out (arXiv 2510.15231, §3.1).

For each sample and each contiguous run of audio tokens (first raw position p, length n) mapped onto a span of S
positions: text before the run keeps its positions; the j-th audio token gets ``p + j (S-1)/(n-1)``
(``linspace(p, p+S-1, n)``); every later token is shifted by ``S - n``. Runs are warped independently and shifts
accumulate. A run is left untouched (no warp, no temperature) when ``n <= S``, unless ``warp_all`` (VLAT) is set.

Everything is vectorised over the batch (no host synchronisation), so it costs a few small kernels per forward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class WarpedPositions(NamedTuple):
    positions: torch.Tensor  # (B, T) float32: positions used by interpolated frequency pairs
    warped_audio: torch.Tensor  # (B, T) bool: audio tokens inside a warped run (they take the temperature)
    shift: torch.Tensor  # (B,) float32: total shift S - n summed over the warped runs (continues decoding)


def raw_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token = number of real tokens before it; padding gets 1 (as ``generate`` does). (B, T)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def warp_positions(audio_mask: torch.Tensor, raw: torch.Tensor, span: int, warp_all: bool = False) -> WarpedPositions:
    """Warp each contiguous audio run of ``audio_mask`` (B, T) onto ``span`` positions; see the module docstring.

    ``raw`` (B, T) are the unwarped positions (consecutive inside an audio run). Positions are returned relative to
    the same origin as ``raw``; a caller continuing a cached sequence adds the shift of the earlier chunks.
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

    span_f = float(span)
    is_run = n > 0
    warp = is_run & ((n > span_f) if not warp_all else torch.ones_like(is_run))
    s_eff = torch.where(warp, torch.full_like(n, span_f), n)
    delta = s_eff - n  # (B, R) shift added after each run
    step = torch.where(warp & (n > 1), (s_eff - 1) / (n - 1).clamp(min=1), torch.ones_like(n))
    cum_incl = delta.cumsum(-1)
    cum_excl = cum_incl - delta

    audio_pos = raw - j + cum_excl.gather(1, run_id) + j * step.gather(1, run_id)
    text_pos = raw + cum_incl.gather(1, run_id)
    positions = torch.where(a, audio_pos, text_pos)
    warped_audio = a & warp.gather(1, run_id)
    return WarpedPositions(positions, warped_audio, cum_incl[:, -1])


def whole_factor(audio_tokens: torch.Tensor, span: int, clamp: bool = True) -> torch.Tensor:
    """Per-sample whole-context factor s = audio tokens / span (at least 1 unless ``clamp`` is off). (B,)."""
    s = audio_tokens.to(torch.float32) / float(span)
    return s.clamp(min=1.0) if clamp else s
