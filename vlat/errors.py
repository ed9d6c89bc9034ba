"""Errors for bad samples. Each names the sample/file and carries a short ``reason`` code that long jobs count."""

from __future__ import annotations


class BadSampleError(ValueError):
    """A sample that cannot be used: ``reason`` is a stable code (``corrupt_audio``, ``too_long``, ...)."""

    def __init__(self, sample: str, reason: str, detail: str):
        self.sample, self.reason, self.detail = sample, reason, detail
        super().__init__(f"{sample}: {detail}")
