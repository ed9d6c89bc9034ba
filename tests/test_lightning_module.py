import torch

from vlat.data import MCQABatchStream, StreamSpec
from vlat.lightning_module import VLATModule
from vlat.lm_head import answer_loss


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
