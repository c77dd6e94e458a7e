from pathlib import Path

import pytest

from pipeline.config import ConfigError, RoundConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "round.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load():
    tiny = load_config(REPO / "configs/tiny.yaml")
    assert tiny.lyrics.count >= 48 and tiny.lyrics.generator.backend == "template"
    production = load_config(REPO / "configs/production.example.yaml")
    assert production.lyrics.count == 20000
    assert production.scoring.transcriber.backend == "whisper" and production.pairs.lyrics.per_gap == 40


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "lyrics:\n  cuont: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "lyrics.cuont: unknown key" in message and "did you mean 'count'" in message


def test_unknown_key_inside_generator_options(tmp_path):
    path = write(tmp_path, "lyrics:\n  generator:\n    backend: template\n    temprature: 1\n")
    with pytest.raises(ConfigError, match=r"lyrics\.generator\.temprature: unknown key"):
        load_config(path)


def test_wrong_type_and_impossible_values_reported_together(tmp_path):
    path = write(tmp_path, "seed: abc\nlyrics:\n  count: -5\nconditions:\n  min_instruments: 4\n  max_instruments: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert any("seed:" in line and "'abc'" in line for line in lines)
    assert any("lyrics.count:" in line and "greater than or equal to 1" in line for line in lines)
    assert any("conditions:" in line and "min_instruments must not exceed max_instruments" in line for line in lines)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "lyrics: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_backend_requirements_checked(tmp_path):
    path = write(tmp_path, "scoring:\n  transcriber:\n    backend: whisper\n")
    with pytest.raises(ConfigError, match="scoring.transcriber.checkpoint: Field required"):
        load_config(path)
    path = write(tmp_path, "scoring:\n  similarity:\n    backend: clap\n")
    with pytest.raises(ConfigError, match="scoring.similarity.model_dir: Field required"):
        load_config(path)
    path = write(tmp_path, "lyrics:\n  generator:\n    backend: nonsense\n")
    with pytest.raises(ConfigError, match="lyrics.generator"):
        load_config(path)


def test_overrides_scale_the_round_and_change_the_hash(tmp_path):
    base = load_config(REPO / "configs/tiny.yaml")
    scaled = load_config(REPO / "configs/tiny.yaml", ["lyrics.count=20000"])
    assert scaled.lyrics.count == 20000 and scaled.digest() != base.digest()
    assert load_config(REPO / "configs/tiny.yaml").digest() == base.digest()
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(REPO / "configs/tiny.yaml", ["lyrics.count"])


def test_effective_shard_size():
    assert RoundConfig.model_validate({"lyrics": {"count": 64}}).lyrics.effective_shard_size == 16
    assert RoundConfig.model_validate({"lyrics": {"count": 20000}}).lyrics.effective_shard_size == 1000
    assert RoundConfig.model_validate({"lyrics": {"count": 100, "shard_size": 7}}).lyrics.effective_shard_size == 7


def test_schema_documents_every_field():
    schema = RoundConfig.model_json_schema()
    lyrics = schema["$defs"]["LyricsConfig"]["properties"]
    assert all("description" in field for field in lyrics.values())


@pytest.mark.parametrize("text, line", [
    ("dpo: {defaults: {max_step: 40}}", "dpo.defaults.max_step: unknown key (did you mean 'max_steps'?)"),
    ("dpo: {defaults: {beta: high}}", "dpo.defaults.beta: Input should be a valid number"),
    ("dpo: {per_strategy: {joint: {max_step: 3}}}", "dpo.per_strategy.joint.max_step: unknown key (did you mean 'max_steps'?)"),
    ("dpo: {per_strategy: {jointt: {max_steps: 3}}}", "dpo.per_strategy: unknown strategy 'jointt'"),
    ("reward_model: {bogus: 1}", "reward_model.bogus: unknown key"),
    ("sweep: {stepp: 0.5}", "sweep.stepp: unknown key (did you mean 'step'?)"),
    ("sweep: {utility: {perr: 1}}", "sweep.utility: unknown metric 'perr'"),
    ("model: {backend: nosuch}", "model.backend: no song model 'nosuch'; installed: "),  # hf-codec once installed
    ("model: {options: {checkpointt: x}}", "model.options.checkpointt: unknown key"),
    ("pairs: {lyrics: {per_gapp: 3}}", "pairs.lyrics.per_gapp: unknown key (did you mean 'per_gap'?)"),
    ("pairs: {harmony: {gap: 3}}", "pairs.harmony: unknown key"),
    ("scoring: {transcriber: {backend: pocketsphinx, lm_weigth: 1}}", "scoring.transcriber.lm_weigth: unknown key"),
])  # fmt: skip
def test_every_section_is_checked_when_the_config_loads(tmp_path, text, line):
    """Upper-layer sections (dpo, sweep, reward_model), the model plugin and the registered pair
    sections fail at load, one line per problem, not when their stage starts."""
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {line}"), lines


def test_sections_are_typed_and_keep_their_defaults():
    config = RoundConfig.model_validate({"dpo": {"per_strategy": {"joint": {"max_steps": 3, "lora": None}}}})
    assert config.dpo.defaults.beta == 0.1 and config.sweep.step == 0.5 and config.reward_model.rankings == "simulated"
    joint = config.dpo.for_strategy("joint")
    assert joint.max_steps == 3 and joint.lora is None and joint.beta == 0.1
    again = RoundConfig.model_validate(config.resolved())  # the flow passes the resolved dict on
    assert again.dpo.per_strategy["joint"].model_dump() == {"max_steps": 3, "lora": None}
    assert again.digest() == config.digest()


def test_the_whole_schema_documents_registered_sections():
    from pipeline.config import config_schema

    schema = config_schema()
    defs = schema["$defs"]
    assert {"reward_model", "dpo", "sweep", "pairs", "scoring"} <= set(schema["properties"])
    assert defs["DpoOptions"]["properties"]["beta"]["default"] == 0.1 and defs["DpoOptions"]["properties"]["beta"]["description"]
    assert {"lyrics", "prompt", "musicality", "selection"} <= set(defs["PairOptions"]["properties"])
    assert {"transcriber", "similarity"} <= set(defs["ScoringConfig"]["properties"])


def test_the_200_prompt_config_is_tiny_with_its_stated_changes():
    """configs/tiny-200.yaml is the README's 200-prompt round: tiny.yaml plus these keys, nothing else."""
    large = load_config(REPO / "configs/tiny-200.yaml")
    tiny = load_config(REPO / "configs/tiny.yaml", [
        "lyrics.count=200", "dpo.per_strategy.lyrics.learning_rate=2e-4", "dpo.per_strategy.lyrics.max_steps=180"])
    assert large.resolved() == tiny.resolved()
    assert large.digest() == tiny.digest() != load_config(REPO / "configs/tiny.yaml").digest()
