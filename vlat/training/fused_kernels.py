"""Fused GPU kernels for training (optional extra ``pip install -e ".[fast]"``): Liger-Kernel's Triton RMSNorm,
SwiGLU and rotary application on the language model.

The profile of the default step (2 min x batch 8 on an H100) spent about 30% of CUDA time in elementwise work:
RMSNorm in fp32 with casts, rotary application, SwiGLU. Liger fuses each into one kernel with the same math
(``casting_mode="llama"`` RMSNorm, ``x * cos + rotate_half(x) * sin`` on whatever per-token cos/sin the audio RoPE
produces, ``silu(gate) * up``). The language model's modules are patched in place through Liger's own entry point;
the audio tower and the LM head are left as they are. Never on CPU (Triton kernels), never required.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from vlat.errors import ConfigError

FusedKernels = Literal["auto", "on", "off"]
INSTALL = 'pip install -e ".[fast]"'


def available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def use_fused_kernels(setting: str, cuda: bool, installed: bool) -> bool:
    """``auto``: on when training on CUDA with the kernels installed; ``on``: required (a one-line error otherwise);
    ``off``: never."""
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"model.fused_kernels: {setting!r} is not one of auto, on, off")
    if setting == "off":
        return False
    if setting == "auto":
        return cuda and installed
    if not cuda:
        raise ConfigError("model.fused_kernels: on needs a CUDA device (the fused kernels never run on CPU)")
    if not installed:
        raise ConfigError(f"model.fused_kernels: on needs liger-kernel ({INSTALL})")
    return True


# Liger's entry point for each decoder the supported families use (Qwen2-Audio and Audio Flamingo 3: Qwen2)
LIGER_ENTRY = {"qwen2": "apply_liger_kernel_to_qwen2", "llama": "apply_liger_kernel_to_llama"}


def liger_entry(language_model) -> str:
    """The name of Liger's patch function for ``language_model``'s decoder type (one-line error when it has none)."""
    model_type = language_model.config.model_type
    if model_type not in LIGER_ENTRY:
        raise ConfigError(
            f"model.fused_kernels: no fused kernels for a {model_type!r} language model (have: {', '.join(LIGER_ENTRY)})"
        )
    return LIGER_ENTRY[model_type]


def apply_fused_kernels(language_model) -> None:
    """Patch the language model's norms, MLPs and rotary application with Liger's fused kernels."""
    import liger_kernel.transformers as liger

    getattr(liger, liger_entry(language_model))(
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
        model=language_model,
    )
