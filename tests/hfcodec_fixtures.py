"""Tiny random instances for an `hf-codec` round, built offline (nothing is downloaded):

- `lm/`: a Llama causal LM (2 layers, hidden 32) with a byte-level tokenizer that also knows
  YuE's special tokens and one token per codec code (`<xcodec_0>` ... `<xcodec_{K-1}>`);
- `codec/`: an X-Codec model (transformers' XcodecModel; 16 kHz, 50 frames a second) with
  random codebook vectors (a fresh XcodecModel has all-zero codebooks, which decode every code
  to the same sound);
- `whisper.pt`: a random Whisper whose transcripts of these songs differ (pocketsphinx hears no
  words in random audio, so every PER would tie and no lyrics pair would exist);
- `rankings`: a stand-in for an annotation campaign's export over a round's candidates (three
  annotators rank each prompt's songs by loudness), in the rankings schema.

    python tests/hfcodec_fixtures.py OUT_DIR                      # OUT_DIR/lm, OUT_DIR/codec, OUT_DIR/whisper.pt
    python tests/hfcodec_fixtures.py rankings ROUND_DIR OUT.parquet

`configs/hf-codec.example.yaml` reads them from `.cache/hfcodec-tiny`.
"""

from __future__ import annotations

import sys
from pathlib import Path

CODEBOOK = 64
SPECIAL = ["<s>", "<pad>", "<unk>", "<SOA>", "<EOA>", "[start_of_segment]", "[end_of_segment]"]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    vocab |= {char: len(SPECIAL) + i for i, char in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="<EOA>", pad_token="<pad>",
                                        unk_token="<unk>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[3:] + [f"<xcodec_{k}>" for k in range(CODEBOOK)]})
    return tokenizer


def build_lm(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the 0.02 init, so sampled songs differ in length and content
        model.lm_head.weight.normal_(0, 0.5)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_codec(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import XcodecConfig, XcodecModel

    torch.manual_seed(seed)
    config = XcodecConfig(
        acoustic_model_config=dict(encoder_hidden_size=4, downsampling_ratios=[8, 5, 4, 2], decoder_hidden_size=32,
                                   upsampling_ratios=[8, 5, 4, 2], hidden_size=8),
        semantic_model_config=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                   conv_dim=[8, 8], conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=16,
                                   num_conv_pos_embedding_groups=2),
        codebook_size=CODEBOOK, target_bandwidths=[0.6], sample_rate=16000,
    )  # fmt: skip
    model = XcodecModel(config).eval()
    with torch.no_grad():
        for quantizer in model.quantizer.quantizers:
            quantizer.codebook.embed.normal_(0, 3.0)
        # Random biases make the decoder's output nearly the same sound for every code: drop them,
        # then scale the path from codes to audio up to audible levels (about 0.1 RMS).
        for module in model.acoustic_decoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and module.bias is not None:
                module.bias.zero_()
        model.fc2.weight.mul_(5.0)
        model.acoustic_decoder.conv2.weight.mul_(400.0)
    model.save_pretrained(out)
    return out


def build_whisper(path: Path, seed: int = 0) -> Path:
    from dataclasses import asdict

    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)  # fmt: skip
    model = Whisper(dims)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=1.0)  # torch.empty in whisper
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=0.02)
    with torch.no_grad():  # the audio's weight in the decoder: else every song gets the same words
        model.encoder.ln_post.weight.mul_(3000.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def build(root: Path) -> tuple[Path, Path, Path]:
    root = Path(root)
    return build_lm(root / "lm"), build_codec(root / "codec"), build_whisper(root / "whisper.pt")


def write_rankings(round_dir: Path, path: Path, annotators: int = 3) -> Path:
    """Each annotator ranks every prompt's candidates by the mix's loudness, with a little noise of
    their own: consistent judges, so quality control keeps them all."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile

    from reward_model.rankings import RANKINGS_SCHEMA

    round_dir = Path(round_dir)
    shards = sorted((round_dir / "candidates").glob("shard-*.parquet"))
    if not shards:
        raise SystemExit(f"{round_dir}: no candidates shards; run the round --until candidates first")
    cands = pd.concat([pd.read_parquet(p) for p in shards])
    cands = cands[cands["error"].isna()]
    loud = {r.candidate_id: float(np.sqrt((soundfile.read(round_dir / r.mix_uri)[0] ** 2).mean())) for r in cands.itertuples()}
    rng, rows = np.random.default_rng(0), []
    for prompt, group in cands.groupby("condition_id"):
        for annotator in range(annotators):
            utility = {c: loud[c] + rng.normal(0, 1e-4) for c in group["candidate_id"]}
            ordered = sorted(utility, key=utility.get, reverse=True)
            rows.append({"annotator_id": f"a{annotator}", "task_id": f"{prompt}/t0", "prompt_id": prompt,
                         "candidate_ids": ordered, "ranks": list(range(1, len(ordered) + 1)), "tied": False,
                         "is_gold": False, "gold_answer": None, "duration_s": 20.0, "simulated": False, "excluded": False})  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RANKINGS_SCHEMA), path)
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if len(sys.argv) == 4 and sys.argv[1] == "rankings":
        print(write_rankings(Path(sys.argv[2]), Path(sys.argv[3])))
    elif len(sys.argv) == 2:
        print("\n".join(map(str, build(Path(sys.argv[1])))))
    else:
        sys.exit("usage: python tests/hfcodec_fixtures.py OUT_DIR | rankings ROUND_DIR OUT.parquet")
