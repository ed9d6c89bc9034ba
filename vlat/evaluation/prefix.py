"""Shared audio prefix: encode a recording once, prefill its prompt prefix once, score all its questions.

YODAS2-MCQA asks five questions per recording. The audio encoding depends only on the recording (the audio tower
and projector are frozen and LoRA touches the language model only), so it is computed once and reused across
adapters, RoPE methods and questions. The KV cache of the prompt prefix (chat header + audio + instruction) is
computed once per (recording, adapter, method); every question then runs only its own suffix tokens. Predictions
equal those of evaluating each question alone (same tokens: :func:`vlat.prompts.mcqa_prompt_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlat.audio import audio_tokens_for_frames
from vlat.lm_head import backbone, logits_at
from vlat.rope import find_audio_model
from vlat.scoring import Prediction


@torch.no_grad()
def encode_audio(model, input_features: torch.Tensor, feature_attention_mask: torch.Tensor) -> torch.Tensor:
    """Projected audio-token embeddings of all windows of one recording, in order: (n_audio, hidden)."""
    audio_model = find_audio_model(model)
    tower = audio_model.audio_tower
    device, dtype = tower.conv1.weight.device, tower.conv1.weight.dtype
    feats, fmask = input_features.to(device, dtype), feature_attention_mask.to(device)
    lengths = audio_tokens_for_frames(fmask.sum(-1))  # (W,)
    conv_len = (fmask.sum(-1) - 1) // 2 + 1  # frames after the first conv, as the encoder masks them
    frames = feats.shape[-1] // 2
    mask2d = (torch.arange(frames, device=device)[None] < conv_len[:, None]).long()
    from transformers.masking_utils import create_bidirectional_mask

    attn = create_bidirectional_mask(
        config=tower.config,
        inputs_embeds=torch.zeros(len(feats), frames, 1, dtype=dtype, device=device),
        attention_mask=mask2d,
    )
    hidden = audio_model.multi_modal_projector(tower(feats, attention_mask=attn).last_hidden_state)  # (W, 750, H)
    keep = torch.arange(hidden.shape[1], device=device)[None] < lengths.to(device)[:, None]
    return hidden[keep]


@torch.no_grad()
def score_questions(
    model,
    prefix_ids: Sequence[int],
    suffixes: Sequence[Sequence[int]],
    audio_embeds: torch.Tensor,
    option_ids: list[int],
) -> list[Prediction]:
    """Logits scoring of several questions sharing one prefix: prefill once, then all suffixes as one batch."""
    audio_model = find_audio_model(model)
    device = audio_embeds.device
    ids = torch.tensor([list(prefix_ids)], device=device)
    embeds = audio_model.get_input_embeddings()(ids)
    audio_mask = ids == audio_model.config.audio_token_id
    embeds = embeds.masked_scatter(audio_mask[..., None], audio_embeds.to(embeds.dtype))
    # prefill: the KV cache only, no logits over the prefix
    prefill = backbone(model, input_ids=ids, inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=True)
    cache = prefill.past_key_values
    n, width = len(suffixes), max(len(s) for s in suffixes)
    cache.batch_repeat_interleave(n)
    suffix = torch.full((n, width), 0, dtype=torch.long, device=device)
    mask = torch.zeros(n, ids.shape[1] + width, dtype=torch.long, device=device)
    mask[:, : ids.shape[1]] = 1
    for i, s in enumerate(suffixes):  # right padding: pads sit after each row's last real token
        suffix[i, : len(s)] = torch.tensor(s, device=device)
        mask[i, ids.shape[1] : ids.shape[1] + len(s)] = 1
    hidden = backbone(model, input_ids=suffix, attention_mask=mask, past_key_values=cache, use_cache=True)
    last = torch.tensor([len(s) - 1 for s in suffixes], device=device)
    probs = logits_at(model, hidden.last_hidden_state, last)[:, option_ids].float().softmax(-1)
    return [Prediction(int(p.argmax()), probs=p.tolist()) for p in probs]
