"""Data cards on a small round: lyrics and conditions by the real stages; candidates, scores, the
reward model and pairs written in the exact layouts their stages use (sampling and scoring audio
would take minutes). Every card passes the linter, the linter catches broken cards, reruns give
the same bytes."""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

import data_cards
from data_cards.lint import lint_card, lint_path
from pipeline.config import RoundConfig
from pipeline.manifest import open_round, update_stage
from pipeline.stages.base import ShardSpec
from pipeline.stages.candidates import SCHEMA as CANDIDATES_SCHEMA
from flows.stages import run_stage_locally
from pipeline.scoring.registry import get_kind
from pipeline.store import RoundStore
from songpref.cli_cards import cards_app

CONFIG = {
    "name": "cards-test",
    "seed": 5,
    "lyrics": {"count": 6, "shard_size": 16, "generator": {"backend": "template", "min_sentences": 1,
                                                           "max_sentences": 1, "max_sections": 3}},
    "sampling": {"num_candidates": 2},
}  # fmt: skip
STAGE_CARDS = ["lyrics", "conditions", "candidates", "scores/per", "scores/similarity", "scores/reward"]
REWARD_SCHEMA = pa.schema([("candidate_id", pa.string()), ("audio_sha256", pa.string()), ("reward", pa.float64()),
                           ("simulated", pa.bool_()), ("error", pa.string())])  # fmt: skip
PAIR_COLUMNS = {
    "prompt": pa.string(), "chosen": pa.string(), "rejected": pa.string(), "prompt_id": pa.string(),
    "chosen_id": pa.string(), "rejected_id": pa.string(), "chosen_audio_uri": pa.string(), "rejected_audio_uri": pa.string(),
    **{f"{side}_{score}": pa.float64() for score in ("per", "similarity", "reward") for side in ("chosen", "rejected")},
    "strategy": pa.string(), "chosen_score": pa.float64(), "rejected_score": pa.float64(), "gap": pa.float64(),
    "genre": pa.string(), "language": pa.string(), "split": pa.string(),
}  # fmt: skip


def finish(store: RoundStore, stage: str, table: pa.Table, metrics: dict) -> None:
    """One shard and a done record, as pipeline.stages.runner.finish_stage leaves them."""
    spec = ShardSpec(stage, 0, {"test": stage}, {})
    store.write_table(spec.filename, table)
    name = posixpath.basename(spec.filename)
    update_stage(store, stage, status="done", rows=table.num_rows, seconds=0.1, errors=[], shards=1,
                 outputs={name: store.file_digest(spec.filename)}, metrics={**metrics, "shards_built": 1})  # fmt: skip


def fake_downstream(store: RoundStore, conditions: list[dict]) -> list[dict]:
    """Candidates, three score tables and a reward model for the real conditions."""
    rows = []
    for i, cond in enumerate(conditions):
        for j in range(2):
            cid = f"{cond['condition_id']}-{j}"
            failed = i == 0 and j == 1  # one failed render, for the skews
            uris = {f"{s}_uri": None if failed else f"candidates/audio/{cid}/{s}.flac" for s in ("mix", "vocals", "accompaniment")}
            rows.append({"candidate_id": cid, "condition_id": cond["condition_id"], "lyric_id": cond["lyric_id"],
                         "candidate_index": j, "seed": 100 * i + j, "model": "tiny", "tokens_uri": None, **uris,
                         "duration_seconds": 0.0 if failed else 20.0 + i + j, "error": "render: flite failed" if failed else None})  # fmt: skip
    model = {"backend": "tiny", "checkpoint": "/somewhere/checkpoint", "checkpoint_sha256": "ab" * 32, "parameters": 6582991,
             "options": {"flite_binary": "flite", "max_frames": None, "sample_rate": 16000}}  # fmt: skip
    finish(store, "candidates", pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA),
           {"candidates": len(rows) - 1, "failed": 1, "model": model, "sampling_seconds": 3.0})  # fmt: skip
    scored = [r for r in rows if not r["error"]]
    failed = [r for r in rows if r["error"]]
    per = [{"candidate_id": r["candidate_id"], "audio_sha256": "0" * 64, "transcript": "la la", "language": "en",
            "per": 10.0 * k, "wer": 12.0 * k, "error": None} for k, r in enumerate(scored)]  # fmt: skip
    per += [{"candidate_id": r["candidate_id"], "error": "no audio: render: flite failed"} for r in failed]
    finish(store, "scores/per", pa.Table.from_pylist(per, schema=get_kind("per").schema),
           {"scored": len(scored), "failed": 1, "scorer": {"backend": "pocketsphinx", "version": "5.1.1", "options": {"lw": 6.5}}})  # fmt: skip
    sim = [{"candidate_id": r["candidate_id"], "audio_sha256": "0" * 64, "similarity": 0.5 + 0.04 * k, "backend": "attributes",
            "details": "{}", "error": None} for k, r in enumerate(scored)]  # fmt: skip
    finish(store, "scores/similarity", pa.Table.from_pylist(sim, schema=get_kind("similarity").schema),
           {"scored": len(scored), "failed": 0, "scorer": {"backend": "attributes", "version": "attributes-features/1"}})  # fmt: skip
    finish(store, "reward_model", pa.table({"annotator_id": ["a1", "a2"]}),
           {"simulated": True, "rankings": 2, "annotators": 11, "annotators_excluded": 1, "pairs_train": 27, "pairs_test": 9,
            "heldout_accuracy": 0.67, "annotator_ceiling": 0.7, "calibration_ece": 0.04, "alpha_ordinal": 0.5})  # fmt: skip
    store.write_json("reward_model/model/eval.json", {"accuracy": 0.67, "simulated_rankings": True})
    reward = [{"candidate_id": r["candidate_id"], "audio_sha256": "0" * 64, "reward": -1.0 + 0.3 * k, "simulated": True,
               "error": None} for k, r in enumerate(scored)]  # fmt: skip
    finish(store, "scores/reward", pa.Table.from_pylist(reward, schema=REWARD_SCHEMA),
           {"scored": len(scored), "failed": 0, "scorer": {"backend": "reward", "model_dir": "/tmp/x/reward_model/model",
                                                           "simulated_rankings": True}})  # fmt: skip
    return scored


def pair_rows(strategy: str, candidates: list[dict], split: str, language: str) -> list[dict]:
    rows = []
    for k, (a, b) in enumerate(zip(candidates[::2], candidates[1::2])):
        scores = {f"{side}_{s}": 1.0 + k for s in ("per", "similarity", "reward") for side in ("chosen", "rejected")}
        rows.append({"prompt": f"<prompt {a['condition_id']}>", "chosen": "1 2 3", "rejected": "1 2 4",
                     "prompt_id": a["condition_id"], "chosen_id": a["candidate_id"], "rejected_id": b["candidate_id"],
                     "chosen_audio_uri": a["mix_uri"], "rejected_audio_uri": b["mix_uri"], **scores, "strategy": strategy,
                     "chosen_score": 2.0 + k, "rejected_score": 1.0 + k / 2, "gap": 1.0 + k / 2, "genre": "pop",
                     "language": language, "split": split})  # fmt: skip
    return rows


def write_pairs(store: RoundStore, candidates: list[dict]) -> None:
    """pairs/<strategy>/data/{train,test}-00000-of-00001.parquet and the pairs record, per the stage's spec."""
    strategies = {}
    for strategy, test in (("lyrics", True), ("prompt", False)):
        splits = {"train": pair_rows(strategy, candidates[:6], "train", "en")}
        if test:
            splits["test"] = pair_rows(strategy, candidates[6:], "test", "zh")
        for split, rows in splits.items():
            store.write_table(f"pairs/{strategy}/data/{split}-00000-of-00001.parquet",
                              pa.Table.from_pylist(rows, schema=pa.schema(list(PAIR_COLUMNS.items()))))  # fmt: skip
        n = {s: len(r) for s, r in splits.items()}
        strategies[strategy] = {"pairs": sum(n.values()), "train": n["train"], "test": n.get("test", 0), "prompts": 4,
                                "candidates_in": len(candidates), "rule": f"{strategy}: rejected minus chosen > 40",
                                "dropped": {"nan_scores": 1, "single_candidate_prompts": 0, "selection_cap": 2}, "status": "written"}  # fmt: skip
    strategies["musicality"] = {"pairs": 0, "train": 0, "test": 0, "prompts": 0, "candidates_in": len(candidates),
                                "rule": "reward margin >= 1.0", "dropped": {}, "status": "empty"}  # fmt: skip
    update_stage(store, "pairs", status="done", rows=sum(s["pairs"] for s in strategies.values()), errors=[], outputs={},
                 metrics={"strategies": strategies, "options": {"lyrics": {"per_gap": 40.0}}})  # fmt: skip


@pytest.fixture(scope="module")
def round_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cards") / "round"
    config = RoundConfig.model_validate(CONFIG)
    store = RoundStore(str(root))
    open_round(store, config)
    for stage in ("lyrics", "conditions"):
        run_stage_locally(stage, config, store)
    conditions = pa.concat_tables(store.read_table(p) for p in store.list_files("conditions", ".parquet")).to_pylist()
    write_pairs(store, fake_downstream(store, conditions))
    data_cards.write_round_cards(store)
    return root


def card(root: Path, name: str) -> tuple[dict, str]:
    text = (root / name / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_every_dataset_gets_a_card_that_passes_the_linter(round_dir):
    expected = STAGE_CARDS + ["pairs/lyrics", "pairs/prompt"]
    assert sorted(str(p.parent.relative_to(round_dir)) for p in round_dir.rglob("README.md")) == sorted(expected)
    assert not (round_dir / "pairs" / "musicality").exists()  # an empty strategy: no folder, no card
    assert lint_path(str(round_dir)) == []
    result = CliRunner().invoke(cards_app, ["lint", str(round_dir)])
    assert result.exit_code == 0, result.output


def test_headers_describe_the_data(round_dir):
    lyrics, _ = card(round_dir, "lyrics")
    assert lyrics["language"] == ["en"] and lyrics["license"] == "apache-2.0" and lyrics["size_categories"] == ["n<1K"]
    assert "simulated" not in lyrics["tags"] and lyrics["annotations_creators"] == ["machine-generated"]
    [split] = lyrics["dataset_info"]["splits"]
    assert split["name"] == "train" and split["num_examples"] == 6 and split["num_bytes"] > 0
    assert {"name": "errors", "sequence": "string"} in lyrics["dataset_info"]["features"]
    reward, body = card(round_dir, "scores/reward")
    assert "simulated" in reward["tags"] and "**Simulated.**" in body and "| annotators excluded (failed gold tasks) | 1 |" in body
    per, body = card(round_dir, "scores/per")
    assert per["task_categories"] == ["text-to-audio", "automatic-speech-recognition"] and "![per distribution](per_hist.png)" in body
    assert "1 of 12 candidates have no per" in body and "/tmp/x" not in card(round_dir, "scores/reward")[1]


def test_pairs_card_has_counts_per_rule_and_loads_as_a_dataset(round_dir):
    header, body = card(round_dir, "pairs/lyrics")
    assert {"preference", "dpo", "simulated"} <= set(header["tags"]) and header["language"] == ["en", "zh"]
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": ["data/train-00000-of-00001.parquet"]},
                                                  {"split": "test", "path": ["data/test-00000-of-00001.parquet"]}]  # fmt: skip
    assert "Rule: lyrics: rejected minus chosen > 40" in body and "| dropped: nan_scores | 1 |" in body
    assert "| pairs | 5 |" in body and (round_dir / "pairs" / "lyrics" / "scores.png").is_file()
    assert "| musicality | empty | 0 | reward margin >= 1.0 |" in body  # the round's other rules, side by side
    prompt, body = card(round_dir, "pairs/prompt")
    assert [s["name"] for s in prompt["dataset_info"]["splits"]] == ["train"] and "no test split" in body
    from datasets import load_dataset

    loaded = load_dataset(str(round_dir / "pairs" / "lyrics"))  # the card's configs point at the files
    assert loaded["train"].num_rows == 3 and loaded["test"].num_rows == 2 and "chosen" in loaded["train"].column_names


def test_rerendering_gives_identical_bytes(round_dir):
    files = sorted(p for p in round_dir.rglob("*") if p.suffix in (".md", ".png"))
    before = {p: p.read_bytes() for p in files}
    written = data_cards.write_round_cards(RoundStore(str(round_dir)))
    assert len(written) == 8 and {p: p.read_bytes() for p in files} == before
    assert data_cards.write_stage_card(RoundStore(str(round_dir)), "reward_model") == []  # not a dataset


@pytest.fixture
def broken(round_dir, tmp_path) -> Path:
    """A copy of one score dataset, to break."""
    folder = tmp_path / "per"
    shutil.copytree(round_dir / "scores" / "per", folder)
    return folder


def edit(folder: Path, old: str, new: str) -> None:
    path = folder / "README.md"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_linter_catches_a_missing_field(broken):
    edit(broken, "license: apache-2.0\n", "")
    assert lint_card(str(broken / "README.md")) == [f"{broken / 'README.md'}: license: missing"]
    edit(broken, "- en\n", "- ''\n")
    assert f"{broken / 'README.md'}: language[0]: empty" in lint_card(str(broken / "README.md"))


def test_linter_catches_an_empty_section_and_placeholders(broken):
    text = (broken / "README.md").read_text(encoding="utf-8")
    uses = text[text.index("## Uses") : text.index("## Distribution")]
    edit(broken, uses, "## Uses\n\n")
    edit(broken, "## Maintenance\n", "## Maintenance\n\n| seed | None |\n{{ provenance.seed }} TODO\n")
    problems = lint_card(str(broken / "README.md"))
    assert f"{broken / 'README.md'}: section 'Uses': empty" in problems
    assert any("unrendered placeholder '{{'" in p for p in problems) and any("'TODO'" in p for p in problems)
    assert any("'None' where a value is expected" in p for p in problems)


def test_linter_catches_a_missing_plot_and_data_file(broken):
    (broken / "per_hist.png").unlink()
    shard = next(broken.glob("shard-*.parquet"))
    shard.unlink()
    problems = lint_path(str(broken))
    assert f"{broken / 'README.md'}: plot per_hist.png: referenced but not found beside the card" in problems
    assert f"{broken / 'README.md'}: data_files {shard.name}: referenced but not found" in problems


def test_linter_catches_a_broken_yaml_header_and_the_cli_exits_1(broken):
    edit(broken, "tags:\n", "tags: [unclosed\n")
    result = CliRunner().invoke(cards_app, ["lint", str(broken)])
    assert result.exit_code == 1
    assert f"{broken / 'README.md'}: yaml header: not valid YAML" in result.output


def test_linter_catches_a_wrong_row_count_and_a_dataset_without_card(round_dir, tmp_path):
    copy = tmp_path / "round"
    shutil.copytree(round_dir, copy)
    edit(copy / "lyrics", "num_examples: 6", "num_examples: 7")
    (copy / "conditions" / "README.md").unlink()
    problems = lint_path(str(copy))
    assert f"{copy / 'lyrics' / 'README.md'}: dataset_info.splits.train.num_examples: 7 but the data files hold 6 rows" in problems
    assert f"{copy / 'conditions' / 'README.md'}: README.md: missing card" in problems
    written = CliRunner().invoke(cards_app, ["write", str(copy)])
    assert written.exit_code == 0 and lint_path(str(copy)) == []


def test_cards_work_on_an_fsspec_round(round_dir):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.put(f"{round_dir}/", "/cards-round/", recursive=True)
    for path in memory.find("/cards-round"):
        if path.endswith("README.md"):
            memory.rm(path)
    assert lint_path("memory://cards-round")[0].endswith("README.md: missing card")
    data_cards.write_round_cards(RoundStore("memory://cards-round"))
    assert lint_path("memory://cards-round") == []
    assert memory.cat_file("/cards-round/pairs/lyrics/README.md") == (round_dir / "pairs" / "lyrics" / "README.md").read_bytes()


def test_an_llm_lyrics_generator_is_named_with_its_prompt_and_an_unverified_licence():
    from data_cards import collectors
    from pipeline.lyrics.llm_common import prompt_digest

    config = RoundConfig.model_validate({"lyrics": {"generator": {"backend": "openai", "base_url": "http://127.0.0.1:1/v1",
                                                                  "model": "qwen-lyrics"}}}).resolved()  # fmt: skip
    info = collectors.lyrics_generator(config)
    assert info["model"] == "qwen-lyrics" and prompt_digest()[:16] in info["prompt"]
    assert info["prompt_files"] == ["lyrics_en.txt", "lyrics_zh.txt"] and ("temperature", "0.9") in info["settings"]
    [row] = collectors.licences(config, {})
    assert row["model"] == "qwen-lyrics" and row["licence"].startswith("not recorded")
