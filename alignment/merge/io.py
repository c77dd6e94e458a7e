"""Streaming safetensors reading for merging: checkpoints as byte ranges, read into reused buffers.

Reading goes through the safetensors header's offsets with `os.preadv` rather than through a
memory map: mapped pages count toward a process's resident memory for as long as the map lives,
so mapping N multi-GB checkpoints would make RSS grow with the model. Writing is merge_writer.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX_NAME = "model.safetensors.index.json"
# safetensors dtype code -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1), "F8_E5M2": (torch.float8_e5m2, 1),
}
FLOAT_CODES = {"F64", "F32", "F16", "BF16"}
DTYPE_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}


class CheckpointError(ValueError):
    """An input that is not a readable safetensors checkpoint; the message names the path."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live: absolute file offsets, not a loaded tensor."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def read_header(file: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors header (u64 length + JSON) into absolute byte ranges, checking them."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, 1 << 28):
            raise CheckpointError(f"{file}: header length {length} does not fit the file; not a safetensors file?")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{file}: unreadable safetensors header: {exc}") from None
    base = 8 + length
    entries = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info.get("dtype") not in DTYPES:
            raise CheckpointError(f"{file}: tensor {key!r} has unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        entry = TensorEntry(file, info["dtype"], tuple(info["shape"]), base + begin, base + end)
        if entry.end > size or entry.end - entry.start != entry.numel * DTYPES[entry.dtype][1]:
            raise CheckpointError(f"{file}: tensor {key!r} byte range [{begin}, {end}) is inconsistent with its shape or the file")
        entries[key] = entry
    return entries


def weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors files of a checkpoint: a .safetensors file, a dir with an index, or a dir with one file."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        if checkpoint.suffix != ".safetensors":
            raise CheckpointError(f"{checkpoint}: not a .safetensors file (pickled .bin checkpoints are not read)")
        return [checkpoint]
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file or directory")
    index = checkpoint / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index with a weight_map: {exc!r}") from None
        files = sorted({checkpoint / name for name in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{checkpoint}: {INDEX_NAME} names missing shards: {missing}")
        return files
    files = sorted(checkpoint.glob("*.safetensors"))
    if len(files) != 1:
        raise CheckpointError(
            f"{checkpoint}: expected {INDEX_NAME} or exactly one .safetensors file, found {len(files)}")
    return files


class CheckpointReader:
    """All tensors of one checkpoint by name, read as byte ranges into caller-owned buffers."""

    def __init__(self, checkpoint: Path):
        self.path = Path(checkpoint)
        self.files = weight_files(self.path)
        self.entries: dict[str, TensorEntry] = {}
        for file in self.files:
            for key, entry in read_header(file).items():
                if key in self.entries:
                    raise CheckpointError(f"{self.path}: tensor {key!r} appears in two shards")
                self.entries[key] = entry
        self._fds: dict[Path, int] = {}

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def prefetch(self, key: str) -> None:
        """Ask the kernel to start reading a tensor into the page cache (not our memory) while we compute."""
        entry = self.entries[key]
        os.posix_fadvise(self._fd(entry.file), entry.start, entry.end - entry.start, os.POSIX_FADV_WILLNEED)

    def read_into(self, key: str, first_byte: int, buffer: memoryview) -> None:
        """Fill `buffer` with the tensor's bytes starting at `first_byte` within the tensor."""
        entry = self.entries[key]
        fd = self._fd(entry.file)
        offset, done = entry.start + first_byte, 0
        while done < len(buffer):
            got = os.preadv(fd, [buffer[done:]], offset + done)
            if got == 0:
                raise CheckpointError(f"{entry.file}: unexpected end of file reading {key!r}")
            done += got

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def file_sha256(path: Path, block: int = 1 << 24) -> str:
    """sha256 by plain reads into one reused buffer (page cache, not resident memory)."""
    digest, buffer = hashlib.sha256(), bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()
