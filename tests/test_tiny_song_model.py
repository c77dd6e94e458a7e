"""The embedded song model as a SongModel: shipped checkpoint, rendering, seeds, spread, plugin lookup."""

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
import soundfile

from pipeline.config import load_config
from pipeline.manifest import open_round
from pipeline.models.base import CandidateRequest, SamplingParams
from pipeline.models.registry import ModelPluginError, available_models, load_song_model
from pipeline.models.tiny.pretrain import evaluate_spread
from pipeline.models.tiny.song_model import CHECKPOINT_DIR, TinyModelError, TinyOptions, TinySongModel, read_tokens
from flows.stages import run_stage_locally
from pipeline.store import RoundStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_conditions(tmp_path_factory) -> list[dict]:
    """The conditions of configs/tiny.yaml's round (64 prompts), built by the real stages."""
    config = load_config(REPO / "configs" / "tiny.yaml")
    store = RoundStore(str(tmp_path_factory.mktemp("round")))
    open_round(store, config)
    record = {name: run_stage_locally(name, config, store) for name in ("lyrics", "conditions")}["conditions"]
    return pa.concat_tables(store.read_table(f"conditions/{n}") for n in record["outputs"]).to_pylist()


@pytest.fixture(scope="module")
def model() -> TinySongModel:
    return TinySongModel()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_shipped_checkpoint_has_a_card_with_its_measurements():
    card = (CHECKPOINT_DIR / "README.md").read_text()
    for needed in ("## Architecture", "## Training recipe", "## Measured spread", "parameters"):
        assert needed in card
    assert "{" not in card.split("---", 2)[2]  # every placeholder filled
    assert (CHECKPOINT_DIR / "training.json").is_file() and (CHECKPOINT_DIR / "spread.json").is_file()


def test_stems_load_at_the_stated_rate_and_duration_and_seeds_reproduce(model, tiny_conditions, tmp_path):
    condition = tiny_conditions[0]
    requests = [CandidateRequest(f"c{j}", condition, seed) for j, seed in enumerate((11, 12, 11))]
    results = model.sample(requests, SamplingParams(), tmp_path / "a")
    model.sample(requests[:1], SamplingParams(), tmp_path / "b")
    for result in results:
        assert result.error is None and set(result.audio) == {"mix", "vocals", "accompaniment"}
        for path in result.audio.values():
            audio, rate = soundfile.read(path)
            assert rate == 16000 and len(audio) / rate == pytest.approx(result.duration_seconds, abs=1e-3)
        tokens = read_tokens(result.tokens)
        assert set(tokens) == {"header", "mixed", "vocals", "accompaniment"} and len(tokens["header"]) == 3
        assert len(tokens["mixed"]) == len(tokens["vocals"]) == len(tokens["accompaniment"])
    a = {r.candidate_id: digests(tmp_path / "a" / r.candidate_id) for r in results}
    assert a["c0"] == a["c2"] == digests(tmp_path / "b" / "c0")  # same seed, same bytes (also across batches)
    assert a["c0"] != a["c1"]


@pytest.mark.timeout(900)
def test_spread_over_24_prompts_by_4_candidates(model, tiny_conditions):
    """Graded imperfection, read from the decoded scores: some near-perfect, some far off."""
    spread = evaluate_spread(model.model, tiny_conditions[:24], n_candidates=4, seed=3)
    assert spread["candidates"] == 96
    assert spread["wer_below_10"] > 0 and spread["wer_above_40"] > 0
    assert 0.5 < spread["tempo_hit"] < 1.0
    assert 0.5 < spread["mode_hit"] < 1.0


def test_candidates_of_one_prompt_differ(model, tiny_conditions):
    songs = model.model.sample_batch(tiny_conditions[1], [1, 2, 3, 4])
    assert len({str(song) for song in songs}) == 4


def test_bad_settings_get_clear_errors(model, tiny_conditions, tmp_path):
    with pytest.raises(TinyModelError, match="cfg_coef"):
        model.sample([CandidateRequest("x", tiny_conditions[0], 1)], SamplingParams(cfg_coef=1.5), tmp_path)
    with pytest.raises(TinyModelError, match="apt-get install flite"):
        TinySongModel(TinyOptions(flite_binary="/nonexistent/flite"))
    with pytest.raises(TinyModelError, match="no config.json"):
        TinySongModel(TinyOptions(checkpoint=tmp_path))


def test_plugins_are_found_by_entry_point():
    assert {"tiny", "levo"} <= set(available_models())
    assert load_song_model("tiny", {"max_frames": 64}).options.max_frames == 64
    with pytest.raises(ModelPluginError, match="no song model 'tinny'"):
        load_song_model("tinny", {})
    with pytest.raises(ModelPluginError, match="model.options.max_frame"):
        load_song_model("tiny", {"max_frame": 64})
