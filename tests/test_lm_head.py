"""Logits at selected positions only: same loss, gradients and logits as the stock full-sequence forward."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlat.data import MCQABatchStream, StreamSpec
from vlat.data.collate import model_inputs
from vlat.rope import AudioRopeConfig, apply_audio_rope
from vlat.training.lm_head import answer_loss, backbone, logits_at
from vlat.training.lora import prepare_for_training

pytestmark = pytest.mark.seam  # transformers / peft internals: also run on the oldest allowed versions


def _lora_model(tiny_model_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    model = prepare_for_training(model, "qkvo", 4, 8, 0.0, False)
    return apply_audio_rope(model, AudioRopeConfig("partial_pi", original_audio_tokens=750)).train()


def test_answer_loss_and_gradients_equal_the_stock_loss(tiny_model_dir, synth_dir, processor):
    model = _lora_model(tiny_model_dir)
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 3, train=True)))
    assert (batch["attention_mask"] == 0).any()  # right padding present: ignored by both

    params = [p for p in model.parameters() if p.requires_grad]
    stock = model(**model_inputs(batch)).loss
    stock_grads = torch.autograd.grad(stock, params)
    ours = answer_loss(model, batch)
    our_grads = torch.autograd.grad(ours, params)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)
    for a, b in zip(our_grads, stock_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_answer_loss_runs_the_lm_head_on_labelled_positions_only(tiny_model_dir, synth_dir, processor):
    model = _lora_model(tiny_model_dir)
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    head = model.get_output_embeddings()
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    with FlopCounterMode(display=False) as stock:
        model(**model_inputs(batch))
    with FlopCounterMode(display=False) as ours:
        answer_loss(model, batch)
    per_row = 2 * head.in_features * head.out_features  # one position's logits
    skipped = batch["input_ids"].numel() - labelled
    assert stock.get_total_flops() - ours.get_total_flops() == skipped * per_row


def test_logits_at_equal_the_stock_logits(tiny_model, synth_dir, processor):
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    with torch.no_grad():
        full = tiny_model(**inputs).logits
        hidden = backbone(tiny_model, **inputs, use_cache=False).last_hidden_state
        positions = batch["attention_mask"].sum(-1) - 1  # each row's last real token
        picked = logits_at(tiny_model, hidden, positions)
    torch.testing.assert_close(picked, full[torch.arange(len(positions)), positions])
