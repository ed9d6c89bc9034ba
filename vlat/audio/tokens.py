"""Audio tokens for the language model: encoder windows -> compression -> projector, each token with its time.

The one place that turns ``input_features`` into the embeddings placed in the ``<|AUDIO|>`` run: the forward seam
(:mod:`vlat.rope.patch`, when a compression is set) and evaluation's shared prefix both call :func:`encode_audio`.
:func:`time_layout` then says, for every audio token of a token sequence, where in its run it lies in time (the
uncompressed 25 tokens/s grid), which is what time-aligned positions are computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from vlat.audio.compression import AudioCompression, compress


class AudioTimes(NamedTuple):
    """Time of each audio token inside its run, in uncompressed token indices (0 for text): (B, T) float32."""

    centre: torch.Tensor  # the token's time: mean index of what it covers
    stop: torch.Tensor  # end of what it covers; the run's largest stop is its uncompressed length n


@dataclass
class AudioTokens:
    """The audio tokens of consecutive 30-s windows, in order (the order ``masked_scatter`` fills the run)."""

    embeds: torch.Tensor  # (N, hidden) projected tokens
    window: torch.Tensor  # (N,) encoder window of each token
    centre: torch.Tensor  # (N,) float32: time inside its window, in uncompressed token indices
    stop: torch.Tensor  # (N,) float32: end of what it covers (last covered index + 1)
    window_tokens: torch.Tensor  # (W,) uncompressed tokens of each window
    compression: AudioCompression  # the setting they were made with

    @property
    def device(self) -> torch.device:
        return self.embeds.device

    def __len__(self) -> int:
        return self.embeds.shape[0]


def encode_audio(
    audio_model,
    input_features: torch.Tensor,
    feature_attention_mask: torch.Tensor,
    compression: AudioCompression | str | None = None,
    windows: int | None = None,
    on_windows=None,
) -> AudioTokens:
    """Run ``audio_model``'s (a family's inner model, :mod:`vlat.models`) audio tower on ``windows`` windows at a
    time (None: all at once), compress each window's encoder output, project. Without compression the embeddings
    equal the stock forward's."""
    from vlat.models import family_of_model

    family = family_of_model(audio_model)
    comp = AudioCompression.parse(compression)
    tower = audio_model.audio_tower
    device, dtype = tower.conv1.weight.device, tower.conv1.weight.dtype
    step = windows or max(len(input_features), 1)
    parts = []
    for lo in range(0, len(input_features), step):
        feats = input_features[lo : lo + step].to(device, dtype)
        fmask = feature_attention_mask[lo : lo + step].to(device)
        lengths = family.tokens_for_frames(fmask.sum(-1)).to(device)  # (W,)
        hidden = family.run_tower(audio_model, feats, fmask)  # (W, tokens per window, d)
        c = compress(hidden, lengths, comp)
        keep = torch.arange(c.x.shape[1], device=device)[None] < c.counts[:, None]
        win = torch.arange(lo, lo + len(feats), device=device)[:, None].expand_as(keep)
        projected = audio_model.multi_modal_projector(c.x)  # (W, M, hidden): as the stock forward, then selected
        parts.append((projected[keep], win[keep], c.centre[keep], c.stop[keep], lengths))
        if on_windows is not None:  # on_windows(done, total): progress
            on_windows(lo + len(feats), len(input_features))
    embeds, win, centre, stop, lengths = (torch.cat(t) for t in zip(*parts, strict=True))
    return AudioTokens(embeds, win, centre.float(), stop.float(), lengths, comp)


def prompt_embeds(audio_model, input_ids: torch.Tensor, tokens: AudioTokens) -> torch.Tensor:
    """Token embeddings of ``input_ids`` (B, T) with ``tokens`` placed in its ``<|AUDIO|>`` run(s), in order."""
    embeds = audio_model.get_input_embeddings()(input_ids)
    audio = (input_ids == audio_model.config.audio_token_id)[..., None]
    return embeds.masked_scatter(audio, tokens.embeds.to(embeds.dtype))


def time_layout(audio_mask: torch.Tensor, tokens: AudioTokens) -> AudioTimes:
    """Time of every audio token of ``audio_mask`` (B, T) inside its run: (B, T) centre and stop.

    The audio tokens of ``audio_mask`` (row-major) are ``tokens`` in order; a run holds whole windows, and a token's
    time is its window's offset in the run (uncompressed tokens of the run's earlier windows) plus its time inside
    the window."""
    a = audio_mask.bool()
    if int(a.sum()) != len(tokens):
        raise ValueError(
            f"audio tokens: the sequence has {int(a.sum())} <|AUDIO|> tokens, the audio gives {len(tokens)}"
        )
    dev = a.device
    prev = torch.nn.functional.pad(a[:, :-1], (1, 0), value=False)
    starts = (a & ~prev)[a]  # (N,) first token of a run
    run = starts.long().cumsum(0) - 1
    win = tokens.window.to(dev)
    first_win = win[starts][run]  # window where each token's run begins
    before = torch.cumsum(tokens.window_tokens.to(dev), 0) - tokens.window_tokens.to(dev)  # tokens before each window
    offset = (before[win] - before[first_win]).float()
    centre = torch.zeros(a.shape, dtype=torch.float32, device=dev)
    stop = torch.zeros(a.shape, dtype=torch.float32, device=dev)
    centre[a] = offset + tokens.centre.to(dev)
    stop[a] = offset + tokens.stop.to(dev)
    return AudioTimes(centre, stop)
