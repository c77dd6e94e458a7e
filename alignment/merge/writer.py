"""Writing merged checkpoints: planned safetensors shards, filled chunk by chunk, in a directory swapped in atomically.

Every shard's header is planned before the first byte (all shapes and dtypes are known up
front), then each merged chunk is appended as it is produced and hashed on the way. Writes and
hashing run on one background thread, overlapping the next chunk's arithmetic: the kernel's
dirty-page throttling otherwise stalls the merge for as long as the disk takes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from alignment.merge.io import DTYPES


@dataclass(frozen=True)
class OutputTensor:
    key: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * DTYPES[self.dtype][1]


def plan_shards(tensors: list[OutputTensor], max_shard_bytes: int, prefix: str = "model") -> list[tuple[str, list[OutputTensor]]]:
    """Split tensors (in the given order) into shards no larger than the limit, named as transformers does."""
    groups: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if groups[-1] and size + tensor.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.nbytes
    # wider dtypes first inside a shard, as safetensors does, so every tensor starts aligned to its element size
    groups = [sorted(group, key=lambda t: -DTYPES[t.dtype][1]) for group in groups]
    if len(groups) == 1:
        return [(f"{prefix}.safetensors", groups[0])]
    total = len(groups)
    return [(f"{prefix}-{i:05d}-of-{total:05d}.safetensors", group) for i, group in enumerate(groups, start=1)]


def shard_header(tensors: list[OutputTensor]) -> bytes:
    """A safetensors header for tensors laid out back to back, padded to 8 bytes with spaces."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.key] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class ShardWriter:
    """Writes one planned shard: header first, then exactly the planned bytes of each tensor in order."""

    def __init__(self, path: Path, tensors: list[OutputTensor], pool: ThreadPoolExecutor | None = None):
        self.path = path
        self._pool = pool
        self._pending: Future | None = None
        self._expected = iter(tensors)
        self._current: OutputTensor | None = None
        self._left = 0
        self._digest = hashlib.sha256()
        self._handle = open(path, "wb")
        self._write(shard_header(tensors))

    def _write(self, data) -> None:
        self._handle.write(data)
        self._digest.update(data)

    def begin(self, key: str) -> None:
        if self._left:
            raise RuntimeError(f"{self.path}: {self._current.key!r} is {self._left} bytes short")
        self._current = next(self._expected)
        if self._current.key != key:
            raise RuntimeError(f"{self.path}: expected tensor {self._current.key!r}, got {key!r}")
        self._left = self._current.nbytes

    def write(self, data: memoryview) -> None:
        """Append bytes. With a pool the write is queued: `data` must stay untouched until the next
        `write` or `close` returns (the caller alternates two buffers); one write is in flight at most."""
        if len(data) > self._left:
            raise RuntimeError(f"{self.path}: too many bytes for {self._current.key!r}")
        self._left -= len(data)
        if self._pool is None:
            self._write(data)
            return
        self._wait()
        self._pending = self._pool.submit(self._write, data)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def abort(self) -> None:
        try:
            self._wait()
        except BaseException:  # already failing: the first error is the one to report
            pass
        self._handle.close()

    def close(self) -> str:
        """fsync and close; returns the shard's sha256."""
        self._wait()
        if self._left or next(self._expected, None) is not None:
            raise RuntimeError(f"{self.path}: closed before every planned tensor was written")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._digest.hexdigest()


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a sibling temp dir to fill; on success it is fsynced and renamed to `out`, on error removed.

    A crash leaves at most a `.<name>.tmp-*` sibling, never a half-written `out`.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: output already exists; choose a new path or ask to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.iterdir():
            fsync_file(child)
        _fsync_dir(tmp)
        if out.exists():  # overwrite: move the old one aside first, so `out` is always whole
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
