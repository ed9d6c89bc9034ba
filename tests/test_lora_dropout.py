"""LoRA dropout fused into lora_A: the same function as explicit dropout with the same mask, fewer saved bytes,
exact under checkpoint recomputation, invisible to optimizers, state dicts and saved adapters."""

import pytest
import torch
from torch import nn

from vlat.training.lora_dropout import DropoutLinear, _DropoutLinear, dropout_mask, fuse_lora_dropout

pytestmark = pytest.mark.seam  # transformers / peft internals: also run on the oldest allowed versions


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_explicit_dropout_with_the_same_mask(dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 16, requires_grad=True)  # fp32 master weight, as LoRA keeps it
    y = _DropoutLinear.apply(x, w, 0.3, 1234)
    g = torch.randn_like(y)
    y.backward(g)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    mask = dropout_mask(x, 0.3, 1234)
    ref = nn.functional.linear(x * mask / 0.7, w.to(dtype))
    ref.backward(g)
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(y, ref, **tol)
    torch.testing.assert_close(gx, x.grad, **tol)
    torch.testing.assert_close(gw, w.grad, **tol)
    assert gw.dtype == torch.float32 and gx.dtype == dtype


def test_gradcheck_and_mask_statistics():
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _DropoutLinear.apply(a, b, 0.25, 7), (x, w))
    big = torch.zeros(200_000)
    kept = dropout_mask(big, 0.05, 1).float().mean().item()
    assert abs(kept - 0.95) < 0.003
    assert torch.equal(dropout_mask(big, 0.05, 1), dropout_mask(big, 0.05, 1))
    assert not torch.equal(dropout_mask(big, 0.05, 1), dropout_mask(big, 0.05, 2))


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``fn`` runs."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def lora_qkv(fused: bool):
    """q, k, v projections with LoRA (rank 4, dropout 0.1) on one shared input, as in a decoder layer."""
    from peft import LoraConfig, get_peft_model

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(64, 64, bias=False) for _ in range(3))

        def forward(self, x):
            return self.q_proj(x) + self.k_proj(x) + self.v_proj(x)

    torch.manual_seed(0)
    model = get_peft_model(
        Attn(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj"])
    )
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    if fused:
        assert fuse_lora_dropout(model) == 3
    return model.train()


def test_saves_one_input_instead_of_a_copy_and_a_mask_per_projection():
    x = torch.randn(2, 50, 64, requires_grad=True)  # 25,600 B in fp32; needs grad, as in every layer after the first
    plain = saved_bytes(lambda: lora_qkv(False)(x).sum())
    fused = saved_bytes(lambda: lora_qkv(True)(x).sum())
    # PEFT keeps per projection the dropped copy (25,600 B) and the dropout mask (on CPU in the input's dtype,
    # 25,600 B; a bool on CUDA); fused keeps x once, shared (both keep lora_B's rank-4 inputs and the weights)
    assert plain - fused == 3 * (25_600 + 25_600) - 25_600


def test_installed_at_the_seam_of_a_peft_model(tiny_model_dir, tmp_path):
    from transformers import Qwen2AudioForConditionalGeneration

    from vlat.training.lora import prepare_for_training

    model = prepare_for_training(Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir), "qkvo", 4, 8, 0.05)
    layers = model.base_model.model.config.text_config.num_hidden_layers
    fused = [m for m in model.modules() if isinstance(m, DropoutLinear)]
    assert len(fused) == 4 * layers and all(m.p == 0.05 for m in fused)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A.default.weight" in n or ".lora_B.default.weight" in n for n in names)
    model.save_pretrained(tmp_path / "adapter")  # PEFT's own files, the usual keys
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert len(keys) == 2 * 4 * layers and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)


def test_checkpoint_recomputation_draws_the_same_masks(tiny_model_dir, synth_dir, processor):
    """Gradients with every layer recomputed equal those without recomputation: the recomputed forward rebuilt the
    same dropout masks."""
    from vlat.data import MCQABatchStream, StreamSpec
    from vlat.training.activation_checkpointing import set_checkpointed_layers
    from vlat.training.lm_head import answer_loss
    from vlat.training.module import VLATModule

    module = VLATModule(
        str(tiny_model_dir), attn_implementation="sdpa", lora_dropout=0.2, gradient_checkpointing="auto"
    )
    module.configure_model()
    model = module.model
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    layers = model.base_model.model.model.language_model.layers
    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))

    def grads(mask, seed=5):
        set_checkpointed_layers(layers, mask)
        model.zero_grad()
        torch.manual_seed(seed)
        answer_loss(model, batch).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, recomputed = grads([False, False]), grads([True, True])
    for n in plain:
        torch.testing.assert_close(recomputed[n], plain[n])
    other = grads([False, False], seed=6)  # another seed, other masks: the comparison can fail
    assert any(not torch.allclose(other[n], plain[n]) for n in plain)
