"""Errors: bad samples (named, with a ``reason`` code long jobs count) and bad configuration (one line, exit 2)."""

from __future__ import annotations


class BadSampleError(ValueError):
    """A sample that cannot be used: ``reason`` is a stable code (``corrupt_audio``, ``too_long``, ...)."""

    def __init__(self, sample: str, reason: str, detail: str):
        self.sample, self.reason, self.detail = sample, reason, detail
        super().__init__(f"{sample}: {detail}")


class ConfigError(ValueError):
    """A configuration or input mistake found before any model loads: ``train.py`` / ``evaluate.py`` print
    ``error: <field or file>: <problem>`` and exit 2."""
