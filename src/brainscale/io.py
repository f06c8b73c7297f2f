"""Atomic file-system writes: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_directory", "atomic_file", "write_text_atomic", "load_torch_file"]

_PARTIAL_TAG = ".partial-"
_OLD_TAG = ".old-"


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name, then rename it into place.

    A run killed midway leaves only a ``.<name>.partial-<pid>`` sibling (and, when killed while
    swapping, the replaced ``.<name>.old-<pid>``), which the next call removes, so the final
    directory is either complete or absent.

    Parameters
    ----------
    final : str or Path
        The directory to create.
    overwrite : bool, default=False
        Replace ``final`` if it exists; otherwise an existing ``final`` is an error.

    Yields
    ------
    Path
        The temporary directory to fill.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"{final} already exists. Remove it, choose another output folder, or pass overwrite."
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    # leftovers of a run killed midway: its half-built folder, or the old output it was replacing
    for tag in (_PARTIAL_TAG, _OLD_TAG):
        for stale in final.parent.glob(f".{final.name}{tag}*"):
            shutil.rmtree(stale, ignore_errors=True)
    partial = final.parent / f".{final.name}{_PARTIAL_TAG}{os.getpid()}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():
        trash = final.parent / f".{final.name}{_OLD_TAG}{os.getpid()}"
        final.rename(trash)
        partial.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        partial.rename(final)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it to ``path`` when the block succeeds.

    The temporary name keeps the suffix, so writers that infer the format from it (numpy,
    matplotlib) behave as with the final name. On error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}{_PARTIAL_TAG}{os.getpid()}{path.suffix}")
    try:
        yield temporary
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_file(path) as temporary:
        temporary.write_text(text)


def load_torch_file(path: str | Path, error: type[Exception]):
    """``torch.load`` a checkpoint on the CPU; an unreadable file (truncated, not PyTorch, another
    pickle) raises ``error`` naming the file and the fix."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as problem:
        raise error(f"{path}: not a readable PyTorch file ({type(problem).__name__}: {problem}). Copy or download "
                    "the checkpoint again, or point the config at the right file.") from None

