"""The tiny model's prompts and songs as text, and the tokenizer that reads that text back.

TRL's DPOTrainer trains on `prompt`, `chosen` and `rejected` strings through a tokenizer, so a
preference dataset for the tiny policy stores its conditions and songs in this text form:

- prompt: the conditioning prefix, four tokens per prefix row, `K<kind> P<position> W<word>
  T<tag>` (see conditioning.py), exactly the ids the model embeds;
- completion: the song's streams one after the other, `H<h>`*3, `V<v>`*T, `A<a>`*T, `M<m>`*T,
  then `</m>`, the mixed stream's end token, which is also the tokenizer's EOS (so TRL adds
  nothing). The order is only a container: the policy scores each stream by its own teacher
  forcing (`TinyPolicy`), and every token's log-probability lands on that token's position.

One id space, ranges in this order: `<pad>`, `</m>`, then K, P, W, T, H, M, V, A. The layout
depends only on the model config, so texts written for one checkpoint read back with another
of the same shape.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizer

from pipeline.models.tiny.codec import MAX_WORDS
from pipeline.models.tiny.conditioning import N_KINDS, encode_condition, tag_vocab_size

PREFIX_FIELDS = ("kind", "position", "word", "tag")
PREFIX_LETTERS = ("K", "P", "W", "T")
STREAM_LETTERS = {"header": "H", "mixed": "M", "vocals": "V", "accompaniment": "A"}
COMPLETION_ORDER = ("header", "vocals", "accompaniment", "mixed")
PAD, EOS = "<pad>", "</m>"
_TOKEN_RE = re.compile(r"<pad>|</m>|[KPWTHMVA]\d+|\S")


@dataclass(frozen=True)
class TokenLayout:
    """Sizes of each id range, from the model config."""

    tag_buckets: int = 512
    word_buckets: int = 4096
    header_vocab: int = 0
    mixed_vocab: int = 0
    vocals_vocab: int = 0
    accompaniment_vocab: int = 0

    @classmethod
    def from_config(cls, config) -> "TokenLayout":
        return cls(config.tag_buckets, config.word_buckets, config.header_vocab, config.mixed_vocab,
                   config.vocals_vocab, config.accompaniment_vocab)  # fmt: skip

    def sizes(self) -> dict[str, int]:
        return {"K": N_KINDS, "P": MAX_WORDS + 1, "W": self.word_buckets, "T": tag_vocab_size(self.tag_buckets),
                "H": self.header_vocab, "M": self.mixed_vocab, "V": self.vocals_vocab, "A": self.accompaniment_vocab}  # fmt: skip

    def offsets(self) -> dict[str, int]:
        """First id of each letter's range (0 and 1 are <pad> and </m>)."""
        out, start = {}, 2
        for letter, size in self.sizes().items():
            out[letter] = start
            start += size
        return out

    @property
    def vocab_size(self) -> int:
        return 2 + sum(self.sizes().values())


def prompt_text(condition: dict, layout: TokenLayout, max_prefix: int | None = None) -> str:
    """The conditioning prefix of `condition` in text form."""
    enc = encode_condition(condition, layout.tag_buckets, layout.word_buckets, max_prefix)
    rows = zip(*(enc[f].tolist() for f in PREFIX_FIELDS))
    return " ".join(f"K{k} P{p} W{w} T{t}" for k, p, w, t in rows)


def completion_text(tokens: dict[str, list[int]]) -> str:
    """A sampled song's streams (tokens.json) in text form, ending with the EOS token."""
    missing = [s for s in COMPLETION_ORDER if s not in tokens]
    if missing:
        raise ValueError(f"song tokens lack stream(s) {missing}")
    if not len(tokens["mixed"]) == len(tokens["vocals"]) == len(tokens["accompaniment"]):
        raise ValueError("song tokens: mixed, vocals and accompaniment streams differ in length")
    parts = [" ".join(f"{STREAM_LETTERS[s]}{t}" for t in tokens[s]) for s in COMPLETION_ORDER]
    return " ".join(p for p in parts if p) + f" {EOS}"


class TinySongTokenizer(PreTrainedTokenizer):
    """Word-level tokenizer over the text form above; no files beyond its config are needed."""

    vocab_files_names: dict = {}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, layout: dict | None = None, **kwargs):
        self.token_layout = TokenLayout(**(layout or {}))
        self._offsets = self.token_layout.offsets()
        self._sizes = self.token_layout.sizes()
        kwargs.setdefault("pad_token", PAD)
        kwargs.setdefault("eos_token", EOS)
        super().__init__(layout=dict(self.token_layout.__dict__), **kwargs)

    @classmethod
    def for_model(cls, model) -> "TinySongTokenizer":
        return cls(layout=TokenLayout.from_config(model.config).__dict__)

    @property
    def vocab_size(self) -> int:
        return self.token_layout.vocab_size

    def get_vocab(self) -> dict[str, int]:
        vocab = {PAD: 0, EOS: 1}
        for letter, start in self._offsets.items():
            vocab.update({f"{letter}{i}": start + i for i in range(self._sizes[letter])})
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return _TOKEN_RE.findall(text)

    def _convert_token_to_id(self, token: str) -> int:
        if token == PAD:
            return 0
        if token == EOS:
            return 1
        letter, number = token[:1], token[1:]
        if letter in self._offsets and number.isdigit() and int(number) < self._sizes[letter]:
            return self._offsets[letter] + int(number)
        raise ValueError(f"tiny song text: {token!r} is not a token of this model's layout")

    def _convert_id_to_token(self, index: int) -> str:
        if index in (0, 1):
            return (PAD, EOS)[index]
        for letter, start in self._offsets.items():
            if start <= index < start + self._sizes[letter]:
                return f"{letter}{index - start}"
        raise ValueError(f"tiny song ids: {index} is outside the vocabulary ({self.vocab_size})")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        # The vocabulary is a function of the layout, which tokenizer_config.json already holds.
        path = os.path.join(save_directory, (filename_prefix or "") + "tiny_song_layout.json")
        with open(path, "w") as handle:
            json.dump(self.token_layout.__dict__, handle, sort_keys=True)
        return (path,)
