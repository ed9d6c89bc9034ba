"""Crash-safe writes: outputs are assembled beside their destination and renamed into place.

A run that dies half-way leaves the previous output (or nothing) — never a half-written file or directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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


TMP_SUFFIX = ".partial"  # what an interrupted write leaves: a hidden ``.<name>.<random>.partial``, never ``<name>``


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a hidden temporary file beside ``path`` (same filesystem, whatever ``$TMPDIR`` is), flushed
    to disk, then renamed over ``path`` in one step: ``path`` is the old file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    write_file_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def staged_files(out_dir: str | os.PathLike):
    """Yield an empty staging directory; on success move every file in it into ``out_dir`` (created if needed).

    Outputs of one job appear together at the end; a job that fails half-way leaves ``out_dir`` as it was.
    """
    out = Path(out_dir)
    tmp = make_staging_dir(out)
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
