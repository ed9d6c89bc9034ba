"""model.fused_kernels: when the fused (Liger) kernels are used, and that they keep the loss and LoRA gradients."""

import importlib.util

import pytest
import torch

from vlat.errors import ConfigError
from vlat.training.fused_kernels import LIGER_ENTRY, liger_entry, use_fused_kernels


def test_when_fused_kernels_are_used():
    table = {
        (setting, cuda, installed): use_fused_kernels(setting, cuda, installed)
        for setting in ("auto", "off")
        for cuda in (False, True)
        for installed in (False, True)
    }
    assert [k for k, on in table.items() if on] == [("auto", True, True)]  # never on CPU, never required
    assert use_fused_kernels("on", True, True)
    with pytest.raises(ConfigError, match="on needs a CUDA device"):
        use_fused_kernels("on", False, True)
    with pytest.raises(ConfigError, match=r"pip install -e \"\.\[fast\]\""):
        use_fused_kernels("on", True, False)
    with pytest.raises(ConfigError, match="model.fused_kernels: 'yes'"):
        use_fused_kernels("yes", True, True)


def test_each_family_gets_the_fused_kernels_of_its_decoder(tiny_model, tiny_af3_model):
    from types import SimpleNamespace

    from vlat.models import find_audio_model

    for model in (tiny_model, tiny_af3_model):  # both decoders are Qwen2
        assert liger_entry(find_audio_model(model).language_model) == "apply_liger_kernel_to_qwen2"
    with pytest.raises(ConfigError, match="no fused kernels for a 'gpt2' language model"):
        liger_entry(SimpleNamespace(config=SimpleNamespace(model_type="gpt2")))
    if importlib.util.find_spec("liger_kernel") is not None:  # the names are Liger's own entry points
        import liger_kernel.transformers as liger

        assert all(callable(getattr(liger, name)) for name in LIGER_ENTRY.values())


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel (the fast extra)")
@pytest.mark.parametrize("rope", ["partial_pi", "partial_yarn"])
def test_fused_kernels_keep_loss_and_lora_gradients(tiny_model_dir, synth_dir, processor, rope):
    """bf16 on CUDA, under autocast as bf16-mixed runs: the same batch through the plain and the fused model."""
    from vlat.data import MCQABatchStream, StreamSpec
    from vlat.training.lm_head import answer_loss
    from vlat.training.module import VLATModule

    batch = next(iter(MCQABatchStream(StreamSpec(str(synth_dir), "train"), processor, 2, train=True)))
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    yarn = {"cutoff_dim": 3, "temperature": 1.3} if rope == "partial_yarn" else {}

    def run(fused):
        torch.manual_seed(0)
        module = VLATModule(
            str(tiny_model_dir),
            dtype="bfloat16",
            lora_dropout=0.0,
            rope_method=rope,
            fused_kernels=fused,
            gradient_checkpointing="off",
            **yarn,
        )
        module.configure_model()
        model = module.model.cuda()
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = answer_loss(model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = run("off")
    fused_loss, fused_grads = run("on")
    torch.testing.assert_close(fused_loss, loss, rtol=2e-2, atol=2e-2)
    for n in grads:
        torch.testing.assert_close(fused_grads[n], grads[n], rtol=5e-2, atol=5e-3)
