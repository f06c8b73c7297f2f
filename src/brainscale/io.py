"""Atomic file-system writes: nothing half-written is ever left under a final name."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_directory", "write_text_atomic"]

_PARTIAL_TAG = ".partial-"


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name, then rename it into place.

    A run killed midway leaves only a ``.<name>.partial-<pid>`` sibling, which the
    next call removes, so the final directory is either complete or absent.

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
    for stale in final.parent.glob(f".{final.name}{_PARTIAL_TAG}*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = final.parent / f".{final.name}{_PARTIAL_TAG}{os.getpid()}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():
        trash = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(trash)
        partial.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        partial.rename(final)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{_PARTIAL_TAG}{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
