"""Tiny random stand-ins for every path of configs/production.example.yaml, and the config
pointing at them: `python tests/production_dirs.py OUT` writes OUT/production.yaml.

What it builds (no weights are downloaded): a random Whisper checkpoint (openai-whisper's own
format, two layers), a random MuQ-MuLan directory (both towers as sub-directories, as
tests/test_mulan.py builds it), a SongGeneration checkout whose generate.py is the file-contract
stand-in (tests/levo_standin) with a checkpoint folder holding config.yaml, and a folder of 12 s
reference clips. Endpoints (the lyrics LLM, the annotation campaign) stay as written: a plan
lists them without contacting them.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS.parent / "configs" / "production.example.yaml"


def tiny_whisper(path: Path) -> Path:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=128, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51866, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)  # fmt: skip
    model = Whisper(dims)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=1.0)  # torch.empty in whisper
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def tiny_mulan(root: Path) -> Path:
    """A random MuQ-MuLan directory (both towers), built as the MuQ-MuLan tests build theirs."""
    sys.path.insert(0, str(TESTS))
    from test_mulan import WORDS, write_tiny_mulan  # one definition of the tiny shapes

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    return write_tiny_mulan(root, vocab)


def songgeneration(repo: Path, checkpoint: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(TESTS / "levo_standin" / "generate.py", repo / "generate.py")
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "config.yaml").write_text("max_dur: 150\n")


def prompt_clips(folder: Path, count: int = 2, rate: int = 48000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(12 * rate) / rate
    for i in range(count):
        sf.write(folder / f"clip-{i}.flac", (0.2 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype("float32"), rate)
    return folder


def make_production_dirs(out: Path) -> Path:
    """Every path of the example config built under `out`; returns the config pointing at them."""
    out = Path(out).resolve()
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["conditions"]["prompt_library"] = str(prompt_clips(out / "prompt-clips"))
    config["scoring"]["transcriber"]["checkpoint"] = str(tiny_whisper(out / "whisper" / "tiny-random.pt"))
    config["scoring"]["similarity"]["model_dir"] = str(tiny_mulan(out / "MuQ-MuLan-tiny"))
    options = config["model"]["options"]
    options["repo_dir"], options["checkpoint_dir"] = str(out / "SongGeneration"), str(out / "songgeneration_tiny")
    songgeneration(Path(options["repo_dir"]), Path(options["checkpoint_dir"]))
    path = out / "production.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/production_dirs.py OUT_DIR")
    print(make_production_dirs(Path(sys.argv[1])))
