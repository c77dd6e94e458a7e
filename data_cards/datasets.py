"""Which datasets a round holds, where their files are, and what their Parquet schemas say.

A dataset is a folder of the round with Parquet data and (once written) a README.md card:
the stage outputs `lyrics/`, `conditions/`, `candidates/`, `scores/<scorer>/` (shards listed
in the manifest) and `pairs/<strategy>/` (Hugging Face layout: `data/<split>-00000-of-00001.parquet`).
Only finished data gets a card: a stage that is not `done`, or a pair strategy that came out
empty, has nothing to describe.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.scoring.registry import score_kinds
from pipeline.store import RoundStore

CARD_FILE = "README.md"
# Stage records whose output folder is a dataset, and the kind of card each gets; every
# `scores/<kind>` record is a scores dataset.
STAGE_KINDS = {"lyrics": "lyrics", "conditions": "conditions", "candidates": "candidates"}
PAIRS_STAGE = "pairs"
SCORES_FOLDER = "scores"


def card_kind(stage: str) -> str | None:
    """The kind of card a stage record's dataset gets (None: the stage writes no dataset card)."""
    return "scores" if stage.startswith(f"{SCORES_FOLDER}/") else STAGE_KINDS.get(stage)


def score_kind(name: str):
    """The score kind behind a `scores/<kind>` dataset, else None."""
    return score_kinds().get(name.split("/", 1)[1]) if card_kind(name) == "scores" else None
PAIRS_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    name: str  # "lyrics", "scores/per", "pairs/lyrics"
    folder: str  # relative to the round
    kind: str  # lyrics | conditions | candidates | scores | pairs
    stage: str  # the manifest record that wrote it
    data_files: dict  # split -> file paths relative to `folder`

    @property
    def card_path(self) -> str:
        return posixpath.join(self.folder, CARD_FILE)

    def files(self, split: str | None = None) -> list[str]:
        """Round-relative data files, of one split or all."""
        splits = [split] if split else list(self.data_files)
        return [posixpath.join(self.folder, f) for s in splits for f in self.data_files[s]]


def stage_datasets(store: RoundStore, manifest: dict, stage: str) -> list[Dataset]:
    """The datasets one finished stage record wrote (none for a stage that writes no dataset)."""
    record = manifest.get("stages", {}).get(stage, {})
    if record.get("status") != "done":
        return []
    if card_kind(stage):
        shards = sorted(record.get("outputs") or {})
        return [Dataset(stage, stage, card_kind(stage), stage, {"train": shards})] if shards else []
    if stage == PAIRS_STAGE:
        return _pair_datasets(store, record)
    return []


def round_datasets(store: RoundStore, manifest: dict) -> list[Dataset]:
    """Every finished dataset of the round, in stage order."""
    stages = [s for s in manifest.get("stages", {}) if card_kind(s)] + [PAIRS_STAGE]  # the manifest keeps stage order
    return [ds for stage in stages for ds in stage_datasets(store, manifest, stage)]


def _pair_datasets(store: RoundStore, record: dict) -> list[Dataset]:
    strategies = (record.get("metrics") or {}).get("strategies") or {}
    found = []
    for strategy in sorted(strategies):
        if strategies[strategy].get("status") != "written":
            continue  # an empty strategy has no data folder and so no card
        folder = posixpath.join(PAIRS_STAGE, strategy)
        files = {split: [posixpath.join("data", posixpath.basename(p))]
                 for split in PAIRS_SPLITS
                 for p in store.list_files(posixpath.join(folder, "data"), ".parquet")
                 if posixpath.basename(p).startswith(f"{split}-")}  # fmt: skip
        if "train" not in files:
            raise FileNotFoundError(f"{store.path(folder)}: pairs strategy '{strategy}' is 'written' but has no data/train-*.parquet")
        found.append(Dataset(folder, folder, "pairs", PAIRS_STAGE, files))
    return found


# ---- reading ----------------------------------------------------------------------------


def read_rows(store: RoundStore, dataset: Dataset, columns: list[str] | None = None, split: str | None = None) -> pa.Table:
    """The dataset's rows (all splits unless one is named), without the writer's schema metadata."""
    tables = []
    for path in dataset.files(split):
        try:
            tables.append(store.read_table(path, columns=columns))
        except (KeyError, pa.ArrowInvalid) as exc:  # e.g. a column the card needs is not in this file
            raise ValueError(f"{store.path(path)}: cannot read columns {columns} for the {dataset.name} card: {exc}") from None
    return pa.concat_tables(tables).replace_schema_metadata(None) if tables else pa.table({})


def split_sizes(store: RoundStore, dataset: Dataset) -> dict[str, int]:
    """Rows per split, from the Parquet footers alone."""
    return {split: sum(_footer(store, path).num_rows for path in dataset.files(split)) for split in dataset.data_files}


def split_bytes(store: RoundStore, dataset: Dataset) -> dict[str, int]:
    """Uncompressed bytes per split (Hugging Face's `num_bytes`), from the Parquet footers."""
    return {split: sum(_uncompressed(_footer(store, path)) for path in dataset.files(split)) for split in dataset.data_files}


def _uncompressed(metadata: pq.FileMetaData) -> int:
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def schema_of(store: RoundStore, dataset: Dataset) -> pa.Schema:
    with store.fs.open(store.path(dataset.files()[0]), "rb") as handle:
        return pq.read_schema(handle)


def _footer(store: RoundStore, path: str) -> pq.FileMetaData:
    with store.fs.open(store.path(path), "rb") as handle:
        return pq.read_metadata(handle)


def hf_features(schema: pa.Schema) -> list[dict]:
    """The schema as Hugging Face `dataset_info.features` entries (name + dtype, lists as sequences)."""
    return [{"name": field.name, **_hf_type(field.type)} for field in schema]


def _hf_type(arrow_type: pa.DataType) -> dict:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        inner = _hf_type(arrow_type.value_type)
        return {"sequence": inner["dtype"] if "dtype" in inner else inner}
    if pa.types.is_struct(arrow_type):
        return {"struct": [{"name": f.name, **_hf_type(f.type)} for f in arrow_type]}
    names = {pa.string(): "string", pa.large_string(): "large_string", pa.bool_(): "bool", pa.null(): "null"}
    return {"dtype": names.get(arrow_type, str(arrow_type))}  # int64, int32, float64, ... keep arrow's names


def size_category(rows: int) -> str:
    """Hugging Face's size_categories bucket for a row count."""
    labels = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
              "1B<n<10B", "10B<n<100B", "100B<n<1T"]  # fmt: skip
    for power, label in enumerate(labels, start=3):
        if rows < 10**power:
            return label
    return "n>1T"
