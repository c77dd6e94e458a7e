"""manifest.json: what a round is (resolved config, its hash, code and package versions,
seeds) and where each stage stands (status, rows, seconds, input/output digests, metrics)."""

from __future__ import annotations

import posixpath
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pipeline.config import RoundConfig
from pipeline.stages.names import STAGES
from pipeline.store import MANIFEST, RoundStore

TRACKED_PACKAGES = ("songpref", "torch", "transformers", "trl", "peft", "datasets", "pyarrow", "prefect", "pydantic")


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    found = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(store: RoundStore) -> dict:
    if not store.exists(MANIFEST):
        raise FileNotFoundError(f"{store.url}: not a round (no {MANIFEST})")
    return store.read_json(MANIFEST)


def open_round(store: RoundStore, config: RoundConfig) -> dict:
    """Create or update the manifest for `config`. Stages finished under another config turn 'stale'."""
    manifest = store.read_json(MANIFEST) if store.exists(MANIFEST) else {"stages": {}}
    manifest.pop("stopped", None)  # a run that stops early says so again
    config_hash = config.digest()
    if manifest.get("config_hash") not in (None, config_hash):
        for record in manifest["stages"].values():
            if record.get("status") == "done":
                record["status"] = "stale"
    manifest.update(
        round=store.url,
        config=config.resolved(),
        config_hash=config_hash,
        seed=config.seed,
        git_sha=_git_sha(),
        versions=_versions(),
        updated_at=now(),
    )
    manifest.setdefault("created_at", now())
    manifest["stages"] = in_stage_order(manifest["stages"])
    store.write_json(MANIFEST, manifest)
    return manifest


def update_stage(store: RoundStore, stage: str, drop: tuple[str, ...] = (), **fields) -> dict:
    """Merge `fields` into one stage's record (removing the keys in `drop`) and rewrite the manifest atomically."""
    manifest = read_manifest(store)
    record = manifest["stages"].setdefault(stage, {})
    for key in drop:
        record.pop(key, None)
    record.update(fields, updated_at=now())
    manifest["stages"] = in_stage_order(manifest["stages"])
    store.write_json(MANIFEST, manifest)
    return record


def annotate_round(store: RoundStore, key: str, value) -> None:
    """Set one top-level manifest entry (e.g. `scheduled`: the deployment run that made the round)."""
    manifest = read_manifest(store)
    manifest[key] = value
    store.write_json(MANIFEST, manifest)


def in_stage_order(records: dict) -> dict:
    """Stage records in pipeline order; a part ("scores/per") sorts under its stage."""
    order = lambda name: (STAGES.index(name.split("/")[0]) if name.split("/")[0] in STAGES else len(STAGES), name)  # noqa: E731
    return {name: records[name] for name in sorted(records, key=order)}


def finished_outputs(store, stage: str) -> list[str]:
    """The shard files of a finished upstream stage, in order; an error if it is not done."""
    record = read_manifest(store)["stages"].get(stage, {})
    if record.get("status") != "done":
        raise RuntimeError(f"stage '{stage}' must be done first (status: {record.get('status', 'not run')})")
    return [posixpath.join(stage, name) for name in sorted(record["outputs"])]
