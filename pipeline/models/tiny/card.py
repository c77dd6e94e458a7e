"""The tiny model's card: README.md beside the checkpoint, written from what the run measured."""

from __future__ import annotations

from pathlib import Path

CARD = """---
license: apache-2.0
library_name: transformers
tags: [songpref, song-generation, levo, tiny, synthetic]
---

# TinyLeLM: songpref's embedded song model

A miniature of LeVo's LeLM for running alignment rounds offline on a CPU. It writes songs as
symbolic token streams that songpref's codec turns into a score and its renderer into audio
(flite-sung vocals, synthesised accompaniment, 16 kHz stems).

## Architecture

- **Conditioning prefix**: description tags (gender, genre, emotion, instruments, tempo bucket,
  bpm bin), the audio-prompt type, and the LeVo-format lyric (structure tags, words, sentence
  stops), each token a sum of kind, word-position, hashed word and tag embeddings.
- **LM** ({lm_layers} Llama blocks, width {hidden_size}, {num_heads} heads): predicts a 3-token
  header (bpm bin, key, mode), then one *mixed* token per eighth-note frame, then EOS.
- **AR decoder** ({decoder_layers} Llama block): predicts the two *dual-track* tokens (vocals,
  accompaniment) of frame t from the LM's states up to frame t + {delay} (delay k = {delay}).
- **Size**: {parameters:,} parameters; weights stored as {dtype} safetensors ({size_mb:.1f} MB).

## Training recipe

`python -m pipeline.models.tiny.pretrain --out DIR` (seed {seed}): LeVo's modular progressive
training in miniature, on {songs:,} synthetic songs that songpref's rule-based composer wrote for
template lyrics ({min_sentences}-{max_sentences} sentences per sung section, first {max_sections}
sections; {frames_mean:.0f} frames on average). {tempo_noise:.0%} of the songs are composed off
their described tempo bucket and {mode_noise:.0%} in the other mode, as tag noise.

| stage | trains | steps | batch | seconds | final loss |
|---|---|---|---|---|---|
| 1 | LM: header + mixed tokens | {s1_steps} | {batch_size} | {s1_seconds:.0f} | {s1_loss:.3f} |
| 2 | AR decoder (LM frozen): vocals + accompaniment | {s2_steps} | {stage2_batch_size} | {s2_seconds:.0f} | {s2_loss:.3f} |

Adam, learning rate {lr}, {warmup_steps} warm-up steps; measured on 2 CPU cores.

## Measured spread

{candidates} candidates ({n_candidates} per held-out condition), temperature 1.0, read from the
decoded scores (not by ASR):

| | value |
|---|---|
| word error rate < 10 % | {wer_below_10:.1%} of candidates |
| word error rate > 40 % | {wer_above_40:.1%} |
| mean word error rate | {mean_wer:.3f} |
| described tempo bucket hit | {tempo_hit:.1%} |
| described mode (key) hit | {mode_hit:.1%} |
| mean share of sung notes in key | {mean_in_key:.3f} |

Mistakes are graded by design: candidates of one condition differ, some skip, repeat or swap
words, some miss the tempo or mode. That is what makes preference pairs meaningful.

## Intended use and limits

The embedded policy of songpref's alignment rounds and tests. It is not a music model: it
knows only the composer's simple styles and sings English template words.
"""


def write_model_card(folder: Path | str, report: dict, spread: dict, parameters: int, dtype: str) -> Path:
    """README.md from training.json's report and the measured spread."""
    folder = Path(folder)
    cfg = report["config"]
    values = {
        **cfg,
        **spread,
        "parameters": parameters,
        "dtype": dtype,
        "size_mb": (folder / "model.safetensors").stat().st_size / 1e6,
        "songs": report["corpus"]["songs"],
        "frames_mean": report["corpus"]["frames_mean"],
        "s1_steps": report["stage1"]["steps"],
        "s1_seconds": report["stage1"]["seconds"],
        "s1_loss": report["stage1"]["final_loss"],
        "s2_steps": report["stage2"]["steps"],
        "s2_seconds": report["stage2"]["seconds"],
        "s2_loss": report["stage2"]["final_loss"],
    }
    path = folder / "README.md"
    path.write_text(CARD.format(**values))
    return path
