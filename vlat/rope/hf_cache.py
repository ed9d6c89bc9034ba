"""The one place that knows what transformers calls the KV cache.

transformers 5.24 renamed the cache keyword and output field of every model from ``past_key_values`` to ``cache``
(the old names still work with a deprecation warning). The seam's hooks must find the cache under whichever name a
caller used, and vlat's own calls use the installed version's name, so no version in the supported range sees a
deprecated name from vlat.
"""

from __future__ import annotations

import inspect
from functools import cache

_NAMES = ("cache", "past_key_values")


@cache
def cache_kwarg() -> str:
    """The installed transformers' name for the cache keyword of a model's ``forward``."""
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioModel

    params = inspect.signature(Qwen2AudioModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(kv_cache) -> dict:
    """``{name: kv_cache}`` to pass to a model's ``forward`` under the installed version's name."""
    return {cache_kwarg(): kv_cache}


def cache_in(kwargs: dict):
    """The cache a forward call was given, under either name (``None`` when it has none)."""
    for name in _NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def cache_of(output):
    """The cache a model output carries, under the field its class declares (``None`` when it has none)."""
    fields = getattr(output, "__dataclass_fields__", {})
    for name in _NAMES:
        if name in fields:
            return getattr(output, name, None)
    return None
