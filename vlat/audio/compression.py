"""Audio-token compression before the language model: uniform average pooling and local temporal bipartite merging.

Methods (a setting is written ``none``, ``pool:K``, ``ltbm:R``, ``ltbm:R:W`` or ``ltbm:R:global``):

- ``pool:K`` — average of every K consecutive tokens (Bhati et al., arXiv 2511.20973, "uniform average pooling";
  they fine-tune LoRA on the pooled tokens). ``ceil(L / K)`` tokens for a window of L.
- ``ltbm:R[:W]`` — Local Temporal Bipartite Merging (Luo et al., arXiv 2605.25179), training-free: bipartite soft
  matching as in ToMe (Bolya et al., ICLR 2023) restricted to nearby tokens. Tokens alternate between sets A and B
  (by time order); each A token's best match is the most cosine-similar B token at most ``W`` places away; the A
  tokens with the most similar matches are merged into them (size-weighted averages). ``R`` is the share of tokens
  removed: ``L - floor(R L)`` tokens stay, exactly (``ltbm:0.5`` keeps as many as ``pool:2``). Beyond R = 1/2 the
  matching repeats on the merged sequence. ``W`` defaults to 4 (this package's choice, 160 ms at 25 tokens/s).
- ``ltbm:R:global`` — the paper's Global Merge control: the same matching without the distance limit, so the two
  variants differ only in locality (same counts, same similarity, same merge rule).

**Where.** On the audio encoder's output, before the linear projector (a size-weighted average commutes with an
affine map, so this equals merging projected tokens, on 1,280 instead of 4,096 dimensions), and **per 30-s encoder
window**: the encoder hears each window on its own, and both papers compress the output of one clip of at most
30 s, so per window is exactly their setting repeated along a long recording; a merged token never mixes two
encoder contexts or moments minutes apart (a global match over a whole 10-minute recording would put a token's
time between unrelated moments); and a window's token count depends on its length alone, so prompts and batch
plans know it before any model runs.

**Time.** Each compressed token carries what it covers, in the window's uncompressed token indices (the 25
tokens/s grid): ``size`` (tokens averaged), ``centre`` (their mean index: its time), ``start`` / ``stop`` (first
covered index, last + 1). Positions are placed by ``centre`` (:mod:`vlat.rope.positions`).

Everything is vectorised over windows (padding masks, no loop over tokens; LTBM loops over matching rounds only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from vlat.errors import ConfigError

DEFAULT_LTBM_WINDOW = 4


@dataclass(frozen=True)
class AudioCompression:
    """One compression setting; :meth:`parse` reads ``none`` / ``pool:K`` / ``ltbm:R[:W|:global]``."""

    method: Literal["none", "pool", "ltbm"] = "none"
    stride: int = 1  # pool: K
    ratio: Fraction = Fraction(0)  # ltbm: share of tokens removed per window, in [0, 1)
    window: int | None = DEFAULT_LTBM_WINDOW  # ltbm: largest A-B distance in places; None = global

    @classmethod
    def parse(cls, spec: str | AudioCompression | None) -> AudioCompression:
        if isinstance(spec, AudioCompression):
            return spec
        text = "none" if spec is None else str(spec).strip().lower()
        name, *args = text.split(":")
        bad = ConfigError(f"audio_compression: {spec!r} is not none, pool:K (K >= 2) or ltbm:R[:W|:global] (0 < R < 1)")
        try:
            if name == "none" and not args:
                return cls()
            if name == "pool" and len(args) == 1:
                k = int(args[0])
                if k < 2:
                    raise bad
                return cls("pool", stride=k)
            if name == "ltbm" and len(args) in (1, 2):
                r = Fraction(args[0])
                window = DEFAULT_LTBM_WINDOW if len(args) == 1 else None if args[1] == "global" else int(args[1])
                if not 0 < r < 1 or (window is not None and window < 1):
                    raise bad
                return cls("ltbm", ratio=r, window=window)
        except (ValueError, ZeroDivisionError):
            raise bad from None
        raise bad

    def __str__(self) -> str:
        if self.method == "pool":
            return f"pool:{self.stride}"
        if self.method == "ltbm":
            tail = "" if self.window == DEFAULT_LTBM_WINDOW else ":global" if self.window is None else f":{self.window}"
            return f"ltbm:{float(self.ratio):g}{tail}"
        return "none"

    @property
    def active(self) -> bool:
        return self.method != "none"

    def count(self, tokens: torch.Tensor | int) -> torch.Tensor:
        """Tokens left from windows of ``tokens`` uncompressed tokens each (elementwise, integer)."""
        n = torch.as_tensor(tokens, dtype=torch.long)
        if self.method == "pool":
            return (n + self.stride - 1) // self.stride
        if self.method == "ltbm":
            return n - n * self.ratio.numerator // self.ratio.denominator
        return n


class Compressed(NamedTuple):
    """Compressed windows, padded: ``x`` (W, M, D) valid where ``arange(M) < counts``; per token (W, M) its size,
    centre, start and stop in the window's uncompressed indices (padding: size 0)."""

    x: torch.Tensor
    counts: torch.Tensor
    size: torch.Tensor
    centre: torch.Tensor
    start: torch.Tensor
    stop: torch.Tensor


def compress(x: torch.Tensor, lengths: torch.Tensor, cfg: AudioCompression) -> Compressed:
    """Compress each window ``x[w, :lengths[w]]`` of ``x`` (W, N, D); padding beyond ``lengths`` is ignored."""
    lengths = lengths.to(device=x.device, dtype=torch.long)
    if cfg.method == "pool":
        return _pool(x, lengths, cfg.stride)
    idx = torch.arange(x.shape[1], device=x.device, dtype=torch.float32).expand(x.shape[0], -1)
    valid = idx < lengths[:, None]
    size = valid.float()
    none = Compressed(x, lengths, size, idx * size, idx * size, (idx + 1) * size)
    if cfg.method == "none":
        return none
    return _ltbm(none, cfg.count(lengths), cfg.window)


def _pool(x: torch.Tensor, lengths: torch.Tensor, k: int) -> Compressed:
    w, n, d = x.shape
    groups = math.ceil(n / k)
    pad = groups * k - n
    xs = F.pad(x, (0, 0, 0, pad)).reshape(w, groups, k, d)
    idx = torch.arange(groups * k, device=x.device, dtype=torch.float32).reshape(groups, k)
    member = idx[None] < lengths[:, None, None].float()  # (W, G, K)
    size = member.sum(-1).float()  # (W, G)
    total = (xs.float() * member[..., None]).sum(2)
    out = (total / size.clamp(min=1)[..., None]).to(x.dtype)
    centre = (idx[None] * member).sum(-1) / size.clamp(min=1)
    start = idx[:, 0].expand(w, -1) * (size > 0)
    stop = torch.minimum(idx[:, -1] + 1, lengths[:, None].float()) * (size > 0)
    return Compressed(out, (lengths + k - 1) // k, size, centre * (size > 0), start, stop)


def _ltbm(tok: Compressed, target: torch.Tensor, window: int | None) -> Compressed:
    """Bipartite merging rounds until every window holds ``target`` tokens (always reachable: while a window has
    two or more tokens, each A token has a B neighbour one place away)."""
    while bool((tok.counts > target).any()):
        tok = _merge_round(tok, target, window)
    return tok


def _merge_round(tok: Compressed, target: torch.Tensor, window: int | None) -> Compressed:
    x, n, size, centre, start, stop = tok
    wins, _, d = x.shape
    dev = x.device
    a, b = slice(0, None, 2), slice(1, None, 2)
    na, nb = (n + 1) // 2, n // 2
    ia = torch.arange(x[:, a].shape[1], device=dev)
    ib = torch.arange(x[:, b].shape[1], device=dev)
    valid_a, valid_b = ia[None] < na[:, None], ib[None] < nb[:, None]
    xf = F.normalize(x.float(), dim=-1)
    sim = xf[:, a] @ xf[:, b].transpose(1, 2)  # (W, A, B) cosine similarity
    allowed = valid_a[:, :, None] & valid_b[:, None, :]
    if window is not None:  # places apart in the current sequence: A at 2i, B at 2j + 1
        allowed &= ((2 * ia[:, None] - 2 * ib[None] - 1).abs() <= window)[None]
    best, match = sim.masked_fill(~allowed, float("-inf")).max(-1)  # (W, A)
    k = torch.minimum(n - target, torch.where(nb > 0, na, 0)).clamp(min=0)  # merges this round per window
    order = best.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, ia.expand_as(order))
    merged = valid_a & (rank < k[:, None])  # (W, A)

    wa = size[:, a] * merged  # weights moved into B slots
    into = match.masked_fill(~merged, 0)
    tot_b = torch.zeros_like(size[:, b]).scatter_add_(1, into, wa)
    size_b = size[:, b] + tot_b
    spread = into[..., None].expand(-1, -1, d)
    acc = (x[:, b].float() * size[:, b, None]).scatter_add_(1, spread, x[:, a].float() * wa[..., None])
    x_b = (acc / size_b.clamp(min=1e-12)[..., None]).to(x.dtype)
    centre_b = (centre[:, b] * size[:, b]).scatter_add_(1, into, centre[:, a] * wa) / size_b.clamp(min=1e-12)
    big = float(2**30)
    start_b = start[:, b].scatter_reduce(1, into, torch.where(merged, start[:, a], big), "amin")
    stop_b = stop[:, b].scatter_reduce(1, into, torch.where(merged, stop[:, a], -big), "amax")

    # survivors: unmerged A tokens and every B token, in time order (by centre)
    keep = torch.cat([valid_a & ~merged, valid_b], 1)
    cat = lambda ta, tb: torch.cat([ta, tb], 1)  # noqa: E731
    key = torch.where(keep, cat(centre[:, a], centre_b), float("inf"))
    pos = key.argsort(dim=-1, stable=True)
    counts = keep.sum(-1)
    m = int(counts.max())
    pos = pos[:, :m]
    take = lambda t: t.gather(1, pos)  # noqa: E731
    live = (torch.arange(m, device=dev)[None] < counts[:, None]).float()
    out_x = cat(x[:, a], x_b).gather(1, pos[..., None].expand(-1, -1, d))
    return Compressed(
        out_x * live[..., None].to(out_x.dtype),
        counts,
        take(cat(size[:, a], size_b)) * live,
        take(cat(centre[:, a], centre_b)) * live,
        take(cat(start[:, a], start_b)) * live,
        take(cat(stop[:, a], stop_b)) * live,
    )
