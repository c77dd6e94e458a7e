"""The round store: one directory (local path or fsspec URL) per alignment round.

Every file is written to a temporary name and renamed into place, so a crash leaves either
the old file or the new one, never half of one. Stage outputs are Parquet shards named by
the digest of their inputs and parameters: a shard that exists is finished.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.digest import digest_bytes

MANIFEST = "manifest.json"


class RoundStore:
    def __init__(self, url: str):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    # ---- atomic writes -------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write via a temporary sibling and a rename; returns the sha256 of the data."""
        final = self.path(relpath)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        tmp = posixpath.join(posixpath.dirname(final), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(final)}")
        with self.fs.open(tmp, "wb") as handle:
            handle.write(data)
        self.fs.mv(tmp, final)
        return digest_bytes(data)

    def read_bytes(self, relpath: str) -> bytes:
        with self.fs.open(self.path(relpath), "rb") as handle:
            return handle.read()

    def write_json(self, relpath: str, value: Any) -> str:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        return self.write_bytes(relpath, text.encode("utf-8"))

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def write_table(self, relpath: str, table: pa.Table) -> str:
        """Parquet with fixed options so the same rows always give the same bytes."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", use_dictionary=True, write_statistics=True)
        return self.write_bytes(relpath, buffer.getvalue())

    def read_table(self, relpath: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open(self.path(relpath), "rb") as handle:
            return pq.read_table(handle, columns=columns)

    def file_digest(self, relpath: str) -> str:
        return digest_bytes(self.read_bytes(relpath))

    def list_files(self, folder: str, suffix: str = "") -> list[str]:
        """Relative paths of the finished files in a folder (temporaries excluded), sorted."""
        base = self.path(folder)
        if not self.fs.exists(base):
            return []
        names = [posixpath.basename(p) for p in self.fs.ls(base, detail=False)]
        return sorted(
            posixpath.join(folder, n) for n in names if n.endswith(suffix) and not n.startswith(".tmp-")
        )

    def remove(self, relpath: str) -> None:
        self.fs.rm(self.path(relpath))

    def remove_temporaries(self, folder: str) -> int:
        """Drop what a crashed writer left behind; returns how many."""
        base = self.path(folder)
        if not self.fs.exists(base):
            return 0
        stale = [p for p in self.fs.ls(base, detail=False) if posixpath.basename(p).startswith(".tmp-")]
        for path in stale:
            self.fs.rm(path)
        return len(stale)
