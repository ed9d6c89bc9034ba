"""Activation checkpointing as a policy: the decision by hand, the per-layer switch, unchanged loss and gradients,
and ``auto`` deciding per batch inside a real ``train.py`` run."""

import pytest
import torch
from test_train import scalars, train, write_config

from vlat.data import MCQABatchStream, StreamSpec
from vlat.rope import AudioRopeConfig, apply_audio_rope, set_virtual_audio_tokens
from vlat.testing.full_size import qwen2_audio_7b_config
from vlat.training.activation_checkpointing import (
    activation_bytes,
    kept_bytes_per_token,
    layer_mask,
    layers_to_checkpoint,
    policy_of,
    set_checkpointed_layers,
)
from vlat.training.lm_head import answer_loss
from vlat.training.module import VLATModule


def test_policy_decisions_by_hand():
    # 4 layers, 10 tokens, 100 B kept per token-layer without checkpointing, 10 with
    assert [layers_to_checkpoint(p, 4, 10, 100, 10, 1) for p in ("off", "full", "selective")] == [0, 4, 2]
    assert activation_bytes(4, 0, 10, 100, 10) == 4000
    assert layers_to_checkpoint("auto", 4, 10, 100, 10, 4000) == 0  # fits: nothing recomputed
    # 3999: k=1 keeps 10 (3*100 + 10 + 100) = 4100 > 3999; k=2 keeps 10 (2*100 + 2*10 + 100) = 3200
    assert activation_bytes(4, 1, 10, 100, 10) == 4100 and activation_bytes(4, 2, 10, 100, 10) == 3200
    assert layers_to_checkpoint("auto", 4, 10, 100, 10, 3999) == 2
    assert layers_to_checkpoint("auto", 4, 10, 100, 10, 0) == 4  # never more than every layer
    assert layers_to_checkpoint("auto", 4, 10, 100, 10, None) == 0
    assert layer_mask(2, 4) == [False, True, False, True] and layer_mask(1, 4) == [False, False, False, True]
    assert layer_mask(0, 3) == [False] * 3 and layer_mask(3, 3) == [True] * 3
    assert (policy_of(True), policy_of(False), policy_of("auto")) == ("full", "off", "auto")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        policy_of("some")
    # 7B widths, bf16: (22 * 4096 + 4 * 11008) * 2 bytes without, 4096 * 2 with
    assert kept_bytes_per_token(qwen2_audio_7b_config().text_config, 2) == (268288, 8192)


@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    module = VLATModule(
        str(tiny_model_dir), attn_implementation="sdpa", lora_dropout=0.0, gradient_checkpointing="auto"
    )
    module.configure_model()
    torch.manual_seed(0)
    for n, p in module.model.named_parameters():  # non-zero LoRA B: the adapters change the output
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    return module


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("rope", ["partial_pi", "partial_yarn", "vlat"])
def test_every_mask_gives_the_same_loss_and_gradients(trained, synth_dir, processor, precision, rope):
    model = trained.model
    layers = model.base_model.model.model.language_model.layers
    cfg = {
        "partial_pi": AudioRopeConfig("partial_pi", original_audio_tokens=400),
        "partial_yarn": AudioRopeConfig("partial_yarn", original_audio_tokens=400, cutoff_dim=3, temperature=1.3),
        "vlat": AudioRopeConfig("partial_pi", original_audio_tokens=400),
    }[rope]
    apply_audio_rope(model, cfg)
    if rope == "vlat":
        set_virtual_audio_tokens(model, 400 * 5)
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    calls = []
    # a submodule: the layer's own hooks stay outside the checkpoint, its children's run again in the recomputation
    hooks = [layer.mlp.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, layer in enumerate(layers)]

    def run(mask):
        set_checkpointed_layers(layers, mask)
        calls.clear()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = answer_loss(model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads, sorted(calls)

    try:
        loss, grads, seen = run([False, False])
        assert seen == [0, 1]
        for mask, recomputed in (([True, True], [0, 0, 1, 1]), ([False, True], [0, 1, 1])):
            other_loss, other_grads, seen = run(mask)
            assert seen == recomputed  # a checkpointed layer runs again in backward
            tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-3}
            torch.testing.assert_close(other_loss, loss, **tol)
            for n in grads:
                torch.testing.assert_close(other_grads[n], grads[n], **tol)
    finally:
        for h in hooks:
            h.remove()
        set_checkpointed_layers(layers, [False, False])
        set_virtual_audio_tokens(model, None)


def test_auto_decides_per_batch_in_train(tmp_path, tiny_model_dir, synth_dir):
    """A budget between the 30-s and the 75-s batches' needs: the short ones recompute nothing, the long ones do;
    logged per step as ``train/checkpointed_layers``."""
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(tiny_model_dir).text_config
    off, on = kept_bytes_per_token(text, 4)
    short, long = 4 * 900, 4 * 2000  # batch of 4: 30 s (750 audio tokens + text) and 75 s (1,875 + text)
    budget = (activation_bytes(2, 0, short, off, on) + activation_bytes(2, 0, long, off, on)) / 2
    config, run = write_config(
        tmp_path,
        tiny_model_dir,
        synth_dir,
        **{
            "trainer.max_steps": 8,
            "data.val_split": None,
            "model.gradient_checkpointing": "auto",
            "model.activation_memory_gib": budget / 2**30,
        },
    )
    train(config)
    k = scalars(run, "train/checkpointed_layers")
    assert len(k) >= 6 and set(k.values()) == {0.0, 2.0}, k
