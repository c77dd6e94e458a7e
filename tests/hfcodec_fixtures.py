"""Tiny random instances of the `hf-codec` backend's two models, built offline (nothing is downloaded):

- `lm/`: a Llama causal LM (2 layers, hidden 32) with a byte-level tokenizer that also knows
  YuE's special tokens and one token per codec code (`<xcodec_0>` ... `<xcodec_{K-1}>`);
- `codec/`: an X-Codec model (transformers' XcodecModel; 16 kHz, 50 frames a second) with
  random codebook vectors (a fresh XcodecModel has all-zero codebooks, which decode every code
  to the same sound).

    python tests/hfcodec_fixtures.py OUT_DIR     # writes OUT_DIR/lm and OUT_DIR/codec

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


def build(root: Path) -> tuple[Path, Path]:
    root = Path(root)
    return build_lm(root / "lm"), build_codec(root / "codec")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hfcodec_fixtures.py OUT_DIR")
    lm, codec = build(Path(sys.argv[1]))
    print(f"{lm}\n{codec}")
