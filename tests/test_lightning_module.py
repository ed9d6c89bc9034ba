import torch

from vlat.data import MCQABatchStream, StreamSpec
from vlat.training.lm_head import answer_loss
from vlat.training.module import VLATModule


def test_lora_on_language_model_only_and_frozen_tower_builds_no_graph(tiny_model_dir, synth_dir, processor):
    module = VLATModule(
        str(tiny_model_dir), dtype="float32", attn_implementation="sdpa", lora_targets="q", gradient_checkpointing=True
    )
    module.configure_model()
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n and ".q_proj." in n for n in trainable)
    seen = {}
    tower = module.model.base_model.model.model.audio_tower
    projector = module.model.base_model.model.model.multi_modal_projector
    tower.register_forward_hook(lambda m, a, out: seen.update(tower=out.last_hidden_state.requires_grad))
    projector.register_forward_hook(lambda m, a, out: seen.update(projector=out.requires_grad))
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    module.model.train()
    loss = answer_loss(module.model, batch)  # the training step's loss
    loss.backward()
    assert seen == {"tower": False, "projector": False}  # frozen encoder: no activations kept for backward
    assert all(p.grad is not None for n, p in module.model.named_parameters() if p.requires_grad)
    assert torch.isfinite(loss)


def test_lora_in_the_activation_dtype_under_mixed_precision_keeps_loss_and_gradients(
    tiny_model_dir, synth_dir, processor
):
    """bf16 weights + bf16 autocast (as a GPU run with bf16-mixed): LoRA layers take the bf16 activations (no fp32
    copies), with gradient checkpointing too; loss and LoRA gradients equal the casting path's within bf16 rounding;
    the LoRA weights stay fp32."""
    from vlat.training.lora import set_lora_input_casting

    module = VLATModule(
        str(tiny_model_dir), dtype="bfloat16", attn_implementation="sdpa", lora_dropout=0.0, gradient_checkpointing=True
    )
    module.configure_model()
    model = module.model
    torch.manual_seed(0)
    for n, p in model.named_parameters():  # non-zero LoRA B so the adapters change the output
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    lora_a = next(m for n, m in model.named_modules() if n.endswith("q_proj.lora_A.default"))
    dtypes = []
    lora_a.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].dtype))

    def run(casting: bool):
        dtypes.clear()
        assert set_lora_input_casting(model, casting) > 0
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = answer_loss(model, batch)
        loss.backward()  # checkpointed layers recompute here, under the same setting
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads, set(dtypes)

    loss_cast, grads_cast, seen_cast = run(True)
    loss_fast, grads_fast, seen_fast = run(False)
    assert seen_cast == {torch.float32} and seen_fast == {torch.bfloat16}  # forward and recomputation alike
    torch.testing.assert_close(loss_fast, loss_cast, rtol=2e-2, atol=2e-2)
    for n in grads_cast:
        torch.testing.assert_close(grads_fast[n], grads_cast[n], rtol=5e-2, atol=5e-3)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)

    class Trainer:  # what on_fit_start reads
        precision = "bf16-mixed"

    module.trainer = Trainer()
    module.on_fit_start()
    flags = [m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert flags and not any(flags)
    module.on_fit_end()
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
