"""Build the mergekit reference for tests/test_merge.py (run once; the outputs are committed).

Makes four tiny random Llama checkpoints (a base and three fine-tune-like perturbations of it)
in float32 and bfloat16, then runs mergekit's own `linear` and `task_arithmetic` methods on
them with the YAML configs beside this script. Needs mergekit, which is not a project
dependency: run it from a scratch venv, e.g.

    python -m venv /tmp/mkvenv
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/mkvenv/lib/python3.11/site-packages/main.pth
    /tmp/mkvenv/bin/pip install -c constraints.txt mergekit==0.1.5
    /tmp/mkvenv/bin/python tests/data/mergekit_reference/make_reference.py
"""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

HERE = Path(__file__).resolve().parent
CONFIGS = ("linear.yaml", "linear_bf16.yaml", "task_arithmetic.yaml")


def make_inputs() -> None:
    torch.manual_seed(1234)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=False)
    base = LlamaForCausalLM(config)
    for name, scale in (("base", 0.0), ("model_a", 0.02), ("model_b", 0.05), ("model_c", 0.1)):
        model = LlamaForCausalLM(config)
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * scale)
        for dtype, folder in ((torch.float32, "inputs"), (torch.bfloat16, "inputs_bf16")):
            out = HERE / folder / name
            shutil.rmtree(out, ignore_errors=True)
            model.to(dtype).save_pretrained(out, safe_serialization=True)
            model.to(torch.float32)


def run_mergekit() -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    for name in CONFIGS:
        raw = yaml.safe_load((HERE / name).read_text())
        raw.pop("allow_extrapolation", None)  # songpref extension, not mergekit schema
        # paths in the YAML are relative to this folder
        for entry in raw["models"]:
            entry["model"] = str(HERE / entry["model"])
        if raw.get("base_model"):
            raw["base_model"] = str(HERE / raw["base_model"])
        out = HERE / "expected" / Path(name).stem
        scratch = HERE / "expected" / f".{Path(name).stem}-full"
        shutil.rmtree(scratch, ignore_errors=True)
        run_merge(MergeConfiguration.model_validate(raw), str(scratch),
                  options=MergeOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=False))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copyfile(scratch / "model.safetensors", out / "model.safetensors")
        shutil.rmtree(scratch)
    (HERE / "expected" / "VERSIONS.txt").write_text(
        f"mergekit {version('mergekit')}\ntorch {torch.__version__}\ntransformers {version('transformers')}\n")


if __name__ == "__main__":
    make_inputs()
    run_mergekit()
