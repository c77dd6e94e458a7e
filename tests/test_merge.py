"""DNI merging: mergekit equivalence, weight rules, streaming/sharding/atomicity, exact LoRA merging, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignment.merge.dense import MANIFEST_NAME, MergeMismatchError
from alignment.merge.dni import merge
from alignment.merge.config import MergeConfigError, MergeOptions, load_merge_config
from alignment.merge.io import file_sha256
from alignment.merge.lora import LoraAdapter, load_adapter, stacked_factors

REFERENCE = Path(__file__).parent / "data" / "mergekit_reference"


def _checkpoint(folder: Path, seed: int, shapes=None, dtype=torch.float32, shards: int = 1) -> Path:
    """A random checkpoint dir (config.json + one file or an indexed set of shards)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or {"embed.weight": (11, 6), "layers.0.w": (6, 6), "layers.1.w": (6, 6), "norm.weight": (6,), "scalar": ()}
    tensors = {k: torch.randn(s, generator=gen).to(dtype) for k, s in shapes.items()}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "toy"}')
    keys = sorted(tensors)
    if shards == 1:
        save_file(tensors, folder / "model.safetensors")
        return folder
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i::shards]}
        save_file(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _load_dir(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


# ---- equivalence with mergekit -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["linear", "linear_bf16", "task_arithmetic"])
def test_matches_mergekit_reference(tmp_path, name):
    """Committed outputs of mergekit 0.1.5 (tests/data/mergekit_reference/make_reference.py) on the same inputs."""
    config = load_merge_config(REFERENCE / f"{name}.yaml")
    merge(config.checkpoints(REFERENCE), config.resolved_weights(), tmp_path / "out", base=config.base(REFERENCE),
          options=MergeOptions(allow_extrapolation=config.allow_extrapolation, dtype=config.dtype))
    mine, expected = _load_dir(tmp_path / "out"), load_file(REFERENCE / "expected" / name / "model.safetensors")
    assert mine.keys() == expected.keys()
    for key in expected:
        assert mine[key].dtype == expected[key].dtype
        if name.startswith("linear"):  # same float32 accumulation order as mergekit: bit-identical
            assert torch.equal(mine[key], expected[key]), key
        else:  # mergekit sums the stacked task vectors in another order: float32 rounding apart
            torch.testing.assert_close(mine[key], expected[key], rtol=0, atol=4 * torch.finfo(torch.float32).eps)


# ---- formulas and weight rules -------------------------------------------------------------------

def test_linear_and_task_vector_formulas(tmp_path):
    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(3)]
    base = _checkpoint(tmp_path / "base", seed=9)
    inputs = [_load_dir(p) for p in paths]
    theta0 = _load_dir(base)
    merge(paths, [0.5, 0.3, 0.2], tmp_path / "lin")
    merge(paths, [0.9, 0.6, -0.3], tmp_path / "ta", base=base, options=MergeOptions(allow_extrapolation=True))
    lin, ta = _load_dir(tmp_path / "lin"), _load_dir(tmp_path / "ta")
    for key in theta0:
        expected = sum(w * t[key].double() for w, t in zip([0.5, 0.3, 0.2], inputs))
        torch.testing.assert_close(lin[key].double(), expected, rtol=1e-6, atol=1e-6)
        expected = theta0[key].double() + sum(w * (t[key].double() - theta0[key].double())
                                              for w, t in zip([0.9, 0.6, -0.3], inputs))
        torch.testing.assert_close(ta[key].double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights, message", [
    ([0.5, 0.4], "sum to"),
    ([1.2, -0.2], "negative"),
    ([0.5, 0.25, 0.25], "3 weights for 2 checkpoints"),
    ([float("nan"), 1.0], "not finite"),
])
def test_weights_are_validated(tmp_path, weights, message):
    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(2)]
    with pytest.raises(MergeConfigError, match=message):
        merge(paths, weights, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extrapolation_when_asked(tmp_path):
    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(2)]
    files = [p / "model.safetensors" for p in paths]  # single files work as well as dirs
    merge(files, [1.5, -0.5], tmp_path / "out", options=MergeOptions(allow_extrapolation=True, compute_dtype="float64"))
    a, b, out = _load_dir(paths[0]), _load_dir(paths[1]), _load_dir(tmp_path / "out")
    torch.testing.assert_close(out["layers.0.w"], 1.5 * a["layers.0.w"] - 0.5 * b["layers.0.w"])


def test_one_checkpoint_is_refused(tmp_path):
    with pytest.raises(MergeConfigError, match="at least 2"):
        merge([_checkpoint(tmp_path / "m", seed=0)], [1.0], tmp_path / "out")


# ---- streaming, sharding, manifest, determinism, atomicity ---------------------------------------

def test_sharded_in_sharded_out_with_manifest(tmp_path):
    paths = [_checkpoint(tmp_path / "a", seed=1, shards=3, dtype=torch.bfloat16),
             _checkpoint(tmp_path / "b", seed=2, dtype=torch.bfloat16)]
    (paths[0] / "tokenizer.json").write_text("{}")
    result = merge(paths, [0.25, 0.75], tmp_path / "out", options=MergeOptions(max_shard_size=200, chunk_elements=5))
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert (out / "tokenizer.json").exists() and (out / "config.json").exists()
    a, b, merged = _load_dir(paths[0]), _load_dir(paths[1]), _load_dir(out)
    for key in a:
        assert merged[key].dtype == torch.bfloat16
        assert torch.equal(merged[key], (0.25 * a[key].float() + 0.75 * b[key].float()).to(torch.bfloat16)), key
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["weights"] == [0.25, 0.75] and manifest["method"] == "linear"
    first = manifest["inputs"][0]["files"]
    assert first["model-00001-of-00003.safetensors"] == file_sha256(paths[0] / "model-00001-of-00003.safetensors")
    assert all(manifest["outputs"][name] == file_sha256(out / name) for name in shards)
    assert manifest["versions"]["torch"] == torch.__version__ and result.tensors == 5


def test_same_inputs_give_identical_bytes_whatever_the_chunk(tmp_path):
    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(3)]
    merge(paths, [0.2, 0.3, 0.5], tmp_path / "one")
    merge(paths, [0.2, 0.3, 0.5], tmp_path / "two", options=MergeOptions(chunk_elements=7))
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_mixed_dtypes_and_integer_buffers(tmp_path):
    """bf16 weights beside an f32 norm and an int64 buffer: floats merge, integers must agree and are copied."""
    def make(name, seed, ids):
        gen = torch.Generator().manual_seed(seed)
        folder = tmp_path / name
        folder.mkdir()
        save_file({"w": torch.randn(3, 3, generator=gen).bfloat16(), "norm": torch.randn(5, generator=gen),
                   "ids": ids}, folder / "model.safetensors")
        return folder

    a, b = make("a", 0, torch.arange(7)), make("b", 1, torch.arange(7))
    merge([a, b], [0.5, 0.5], tmp_path / "out", options=MergeOptions(dtype="float16"))
    out = load_file(tmp_path / "out" / "model.safetensors")  # loads: every tensor starts aligned
    assert (out["w"].dtype, out["norm"].dtype, out["ids"].dtype) == (torch.float16, torch.float16, torch.int64)
    assert torch.equal(out["ids"], torch.arange(7))
    c = make("c", 2, torch.arange(7) + 1)
    with pytest.raises(MergeMismatchError, match="non-float tensor 'ids' differs"):
        merge([a, c], [0.5, 0.5], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_mismatches_are_all_listed_and_nothing_is_written(tmp_path):
    good = _checkpoint(tmp_path / "good", seed=0)
    bad = _checkpoint(tmp_path / "bad", seed=1, shapes={"embed.weight": (12, 6), "layers.0.w": (6, 6), "norm.weight": (6,),
                                                        "scalar": (), "extra.bias": (3,)})
    save_file({**load_file(bad / "model.safetensors"), "layers.0.w": torch.zeros(6, 6, dtype=torch.float16)},
              bad / "model.safetensors")
    with pytest.raises(MergeMismatchError) as caught:
        merge([good, bad], [0.5, 0.5], tmp_path / "out")
    message = str(caught.value)
    assert "4 mismatches" in message
    for fragment in ("missing tensor 'layers.1.w'", "extra tensor 'extra.bias'", "'embed.weight' has shape [12, 6]",
                     "'layers.0.w' has dtype F16"):
        assert fragment in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good"]  # no output, no temp dir


def test_failure_midway_leaves_no_output(tmp_path):
    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(2)]

    def crash(done, total, key):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge(paths, [0.5, 0.5], tmp_path / "out", progress=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0", "m1"]
    merge(paths, [0.5, 0.5], tmp_path / "out")
    with pytest.raises(FileExistsError):
        merge(paths, [0.5, 0.5], tmp_path / "out")


# ---- YAML config ---------------------------------------------------------------------------------

def test_config_rejects_unknown_keys_by_name(tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text("merge_method: linear\nslices: []\nmodels:\n  - model: a\n    parameters: {wieght: 1}\n  - model: b\n"
                      "    parameters: {weight: 1}\n")
    with pytest.raises(MergeConfigError) as caught:
        load_merge_config(config)
    assert "slices" in str(caught.value) and "models.0.parameters.wieght" in str(caught.value)
    config.write_text("merge_method: task_arithmetic\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                      "  - model: b\n    parameters: {weight: 1}\n")
    with pytest.raises(MergeConfigError, match="needs base_model"):
        load_merge_config(config)


def test_config_normalize_defaults_follow_mergekit():
    assert load_merge_config(REFERENCE / "linear.yaml").resolved_weights() == (0.5, 0.25, 0.25)
    assert load_merge_config(REFERENCE / "task_arithmetic.yaml").resolved_weights() == (0.7, 0.5, -0.2)


# ---- LoRA ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_world(tmp_path_factory):
    """A tiny Llama base and three LoRA adapters of different rank, alpha and scaling rule."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    adapters = []
    for i, (rank, alpha, rslora) in enumerate([(2, 4, False), (4, 16, True), (3, 5, False)]):
        model = get_peft_model(LlamaForCausalLM.from_pretrained(root / "base"), LoraConfig(
            r=rank, lora_alpha=alpha, use_rslora=rslora, target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False))  # random B too, so every delta is non-zero
        model.save_pretrained(root / f"adapter{i}")
        adapters.append(root / f"adapter{i}")
    return root, adapters


def _dense_deltas(adapters, weights):
    loaded = [load_adapter(a) for a in adapters]
    return {m: sum(w * a.scaling[m] * (a.factors[m][1].double() @ a.factors[m][0].double()) for a, w in zip(loaded, weights))
            for m in loaded[0].factors}


def test_lora_stacked_and_dense_are_exact_and_peft_agrees(tmp_path, lora_world):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    root, adapters = lora_world
    weights = [0.5, 0.3, 0.2]
    merge(adapters, weights, tmp_path / "stacked")
    merge(adapters, weights, tmp_path / "dense", base=root / "base")
    deltas = _dense_deltas(adapters, weights)
    stacked = load_adapter(tmp_path / "stacked")
    base, dense = load_file(root / "base" / "model.safetensors"), _load_dir(tmp_path / "dense")
    assert stacked.config["r"] == 9 and all(s == 1.0 for s in stacked.scaling.values())
    for module, delta in deltas.items():
        a, b = stacked.factors[module]
        torch.testing.assert_close((b.double() @ a.double()), delta, rtol=1e-5, atol=1e-6)
        key = f"{module}.weight"
        torch.testing.assert_close(dense[key].double() - base[key].double(), delta, rtol=1e-5, atol=1e-6)
    untouched = [k for k in base if not any(k == f"{m}.weight" for m in deltas)]
    assert untouched and all(torch.equal(dense[k], base[k]) for k in untouched)
    ids = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(root / "base"), tmp_path / "stacked")(ids).logits
        dense_logits = LlamaForCausalLM.from_pretrained(tmp_path / "dense")(ids).logits
    torch.testing.assert_close(peft_logits, dense_logits, rtol=1e-4, atol=1e-5)


def test_factor_averaging_would_not_be_exact():
    """Why stacking: averaging A and B (PEFT's 'linear' combination) misses Σ αᵢ BᵢAᵢ by far more than rounding."""
    gen = torch.Generator().manual_seed(3)
    adapters = [LoraAdapter(Path(f"a{i}"), {}, {"m": (torch.randn(4, 8, generator=gen), torch.randn(6, 4, generator=gen))},
                            {"m": 0.5}) for i in range(2)]
    exact = sum(0.5 * 0.5 * a.factors["m"][1].double() @ a.factors["m"][0].double() for a in adapters)
    a, b = stacked_factors(adapters, [0.5, 0.5], "m")
    torch.testing.assert_close((b @ a).double(), exact, rtol=1e-5, atol=1e-6)
    averaged = 0.5 * sum(x.factors["m"][1] for x in adapters) @ (0.5 * sum(x.factors["m"][0] for x in adapters))
    assert (averaged.double() - exact).abs().max() > 0.1


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_paths_and_config(tmp_path):
    from typer.testing import CliRunner

    from songpref.cli import app

    paths = [_checkpoint(tmp_path / f"m{i}", seed=i) for i in range(2)]
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(paths[0]), str(paths[1]), "--weights", "0.5,0.5", "--out", str(tmp_path / "o1")])
    assert result.exit_code == 0, result.output
    assert "peak RSS" in result.output and (tmp_path / "o1" / "model.safetensors").exists()
    config = tmp_path / "merge.yaml"
    config.write_text("merge_method: linear\nmodels:\n  - model: m0\n    parameters: {weight: 1}\n"
                      "  - model: m1\n    parameters: {weight: 1}\n")
    result = runner.invoke(app, ["merge", "--config", str(config), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o1" / "model.safetensors").read_bytes() == (tmp_path / "o2" / "model.safetensors").read_bytes()
    result = runner.invoke(app, ["merge", str(paths[0]), str(paths[1]), "--weights", "0.7,0.7", "--out", str(tmp_path / "o3")])
    assert result.exit_code == 2 and "sum to" in result.output and not (tmp_path / "o3").exists()


def test_cli_lora(tmp_path, lora_world):
    from typer.testing import CliRunner

    from songpref.cli import app

    root, adapters = lora_world
    runner = CliRunner()
    result = runner.invoke(app, ["merge", *map(str, adapters), "--weights", "0.2,0.2,0.6", "--lora", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())["method"] == "lora_stacked"
    result = runner.invoke(app, ["merge", str(root / "base"), str(adapters[0]), "--weights", "0.5,0.5", "--lora",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not PEFT adapter dirs" in result.output
