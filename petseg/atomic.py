"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "status.json"
>>> atomic_write_json(path, {})
>>> path.read_bytes(), sorted(item.name for item in path.parent.iterdir())
(b'{}\\n', ['status.json'])
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (the same file system; a "." name, so listings skip it; ``suffix`` for
    writers that check extensions): it replaces ``path`` when the block succeeds, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files private; checkpoints and logs are for everyone to read.
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # Flush the folder's entries so the rename survives a crash.
        descriptor = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())
