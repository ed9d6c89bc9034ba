"""Crash-safe writes, the one place that publishes files: single files and directories are assembled beside their
destination and renamed into place; a job's set of output files is switched in one step (:func:`published_files`).

A run that dies half-way leaves the previous output (or nothing) — never a half-written file or directory, never
a mix of old and new files.
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

from vlat.errors import ConfigError


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


CURRENT = ".current"  # out_dir/.current -> .gen-XXXX: the published generation of a job's output files


def check_output_dir(out_dir: str | os.PathLike, field: str = "--output") -> Path:
    """The directory a job will publish into, checked before any model loads (created only when the job publishes):
    a file in the way or an unwritable place fails here in one line, not after hours."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{field} {out}: exists and is not a directory")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{field} {out}: cannot write there ({probe} is not a directory)")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ConfigError(f"{field} {out}: cannot write there ({e.strerror or e})") from e
    return out


def _symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one step (a new link renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync_tree(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def published_files(out_dir: str | os.PathLike):
    """Yield an empty staging directory inside ``out_dir`` (the output's own filesystem, mount points included); on
    success its files replace the job's previous outputs in one switch.

    Each output ``out_dir/<name>`` is a link to ``.current/<name>`` and ``.current`` links to the generation
    directory holding the files; publishing renames one new ``.current`` over the old. A job killed at any moment
    leaves the previous set or the new one, never a mix, and nothing half-written under a normal name. Other
    entries of ``out_dir`` (``compare.py``'s runs) are untouched.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    current = out / CURRENT
    old = os.readlink(current) if current.is_symlink() else None
    for stale in out.glob(".gen-*"):  # left by a killed job
        if stale.name != old:
            shutil.rmtree(stale, ignore_errors=True)
    gen = Path(tempfile.mkdtemp(prefix=".gen-", dir=out))
    try:
        yield gen
        gen.chmod(0o755)
        _fsync_tree(gen)
        names = sorted(f.name for f in gen.iterdir())
        legacy = [n for n in names if (out / n).exists() and not (out / n).is_symlink()]
        if legacy:  # plain files from before: moved behind .current first (hard links: same content), so they
            prev = Path(tempfile.mkdtemp(prefix=".gen-", dir=out))  # stay visible until the switch
            for n in legacy:
                os.link(out / n, prev / n)
            _symlink_atomic(prev.name, current)
            if old:
                shutil.rmtree(out / old, ignore_errors=True)
            old = prev.name
        for n in names:  # links through .current: dangling (absent) or the old generation's file until the switch
            if not ((out / n).is_symlink() and os.readlink(out / n) == f"{CURRENT}/{n}"):
                _symlink_atomic(f"{CURRENT}/{n}", out / n)
        _symlink_atomic(gen.name, current)  # the switch
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)
        raise
    if old and old != gen.name:
        shutil.rmtree(out / old, ignore_errors=True)
