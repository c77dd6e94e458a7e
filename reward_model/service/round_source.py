"""The songs a campaign can show, read from a round directory written by the pipeline.

Candidates come from the finished `candidates` stage (`<round>/candidates/*.parquet`, listed by
the manifest); a candidate is usable when it rendered (`error` is null) and has a mix. Audio URIs
stay relative to the round root, as the pipeline writes them, and are only ever resolved by
`audio_path`, which refuses anything outside `<round>/candidates/audio/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

AUDIO_ROOT = Path("candidates") / "audio"


@dataclass(frozen=True)
class RoundCandidate:
    candidate_id: str
    prompt_id: str  # the candidate's condition_id
    mix_uri: str
    vocals_uri: str | None


def read_round_candidates(round_dir: str | Path) -> list[RoundCandidate]:
    """Every rendered candidate of the round, sorted by (prompt, candidate)."""
    # Imported here: pipeline.manifest pulls in the whole config schema (seconds), which only
    # campaign creation needs, not every server start.
    from pipeline.manifest import finished_outputs
    from pipeline.store import RoundStore

    store = RoundStore(str(round_dir))
    found = []
    for shard in finished_outputs(store, "candidates"):
        for row in store.read_table(shard, columns=["candidate_id", "condition_id", "mix_uri", "vocals_uri", "error"]).to_pylist():
            if row["error"] is None and row["mix_uri"]:
                found.append(RoundCandidate(row["candidate_id"], row["condition_id"], row["mix_uri"], row["vocals_uri"]))
    return sorted(found, key=lambda c: (c.prompt_id, c.candidate_id))


@dataclass(frozen=True)
class PromptText:
    """What the songs of a prompt were asked to be: the text description and the lyrics."""

    description: str | None
    lyrics: str | None


@lru_cache(maxsize=8)
def read_prompt_texts(round_dir: str) -> dict[str, PromptText]:
    """Each condition's description and lyrics, by condition id (= the campaign's prompt id); empty
    when the round's `conditions` stage is not done. Cached: a round's conditions do not change
    once its candidates exist."""
    from pipeline.manifest import finished_outputs, read_manifest
    from pipeline.store import RoundStore

    store = RoundStore(round_dir)
    if read_manifest(store)["stages"].get("conditions", {}).get("status") != "done":
        return {}
    texts = {}
    for shard in finished_outputs(store, "conditions"):
        for row in store.read_table(shard, columns=["condition_id", "description", "lyric"]).to_pylist():
            texts[row["condition_id"]] = PromptText(row["description"], row["lyric"])
    return texts


def audio_path(round_dir: str | Path, uri: str) -> Path | None:
    """The file a candidate's stored audio URI names, or None if it resolves (after symlinks and
    `..`) outside `<round>/candidates/audio/` or is not a file."""
    allowed = (Path(round_dir) / AUDIO_ROOT).resolve()
    target = (Path(round_dir) / uri).resolve()
    if not target.is_relative_to(allowed) or not target.is_file():
        return None
    return target
