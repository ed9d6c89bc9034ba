"""Crash-safe writes: outputs are assembled beside their destination and renamed into place.

A run that dies half-way leaves the previous output (or nothing) — never a half-written file or directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def make_staging_dir(dest: Path) -> Path:
    """An empty directory next to ``dest`` (same filesystem, so the final rename is atomic)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as e:
        raise OSError(f"cannot write to {dest}: {e.strerror or e}") from e
    tmp.chmod(0o755)
    return tmp


def publish_dir(staging: Path, dest: Path) -> None:
    """Replace ``dest`` with the finished ``staging`` directory."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
