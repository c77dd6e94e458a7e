"""Condition dict -> the tiny LeLM's conditioning prefix: parallel LongTensors, one entry per token.

No tokenizer files: every id is a fixed table index or a stable crc32 hash. Each prefix token
has four ids whose embeddings the model sums:
- kind: PAD, BOS, DESC (a description tag), PROMPT (the audio-prompt type), STRUCT (a lyric
  section tag), WORD (a lyric word), STOP (a sentence end).
- position: for a WORD, its index in `codec.lyric_words(lyric)` (the "copy" vocabulary: vocal
  tokens NOTE_ON(position, pitch) point at it); NO_POSITION for other tokens.
- word: hashed word identity (1..word_buckets-1), 0 for non-words.
- tag: STRUCTURE_TAGS index + 1 for a section tag, a hashed "field:value" id for description
  and prompt tokens, 0 otherwise.
Order: BOS, description tags (gender, genre, emotion, instruments, tempo bucket, bpm bin),
the optional prompt token, then per section its tag token and words with a STOP per sentence.
"""

from __future__ import annotations

import zlib

import torch

from pipeline.lyrics.format import STRUCTURE_TAGS, VOCAL_TAGS, split_sections
from pipeline.models.tiny.codec import MAX_WORDS, bpm_bin, sentence_words
from pipeline.vocab import tempo_bucket

PAD, BOS, DESC, PROMPT, STRUCT, WORD, STOP = range(7)
N_KINDS = 7
NO_POSITION = MAX_WORDS  # the position table has MAX_WORDS + 1 rows
N_STRUCT = len(STRUCTURE_TAGS) + 2  # 0 = none, 1.. = STRUCTURE_TAGS, last = unknown tag


def stable_hash(text: str, buckets: int) -> int:
    """1..buckets-1 (0 is reserved for 'none'); identical across runs and machines."""
    return 1 + zlib.crc32(text.encode("utf-8")) % (buckets - 1)


def described_tempo(condition: dict) -> str:
    return str(condition.get("tempo") or tempo_bucket(float(condition.get("bpm") or 120)))


def description_tags(condition: dict) -> list[str]:
    tags = [f"gender:{condition.get('gender', '')}", f"genre:{condition.get('genre', '')}",
            f"emotion:{condition.get('emotion', '')}"]  # fmt: skip
    tags += [f"instrument:{i}" for i in condition.get("instruments") or []]
    tags += [f"tempo:{described_tempo(condition)}", f"bpm:{bpm_bin(float(condition.get('bpm') or 120))}"]
    return [t.lower() for t in tags]


def encode_condition(condition: dict, tag_buckets: int = 512, word_buckets: int = 4096,
                     max_prefix: int | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """{"kind", "position", "word", "tag"}: equal-length 1-D LongTensors (see module doc).

    Word positions agree with codec.lyric_words: only verse/chorus/bridge words count, and
    words past MAX_WORDS are dropped. `max_prefix` truncates the whole prefix."""
    rows: list[tuple[int, int, int, int]] = [(BOS, NO_POSITION, 0, 0)]
    rows += [(DESC, NO_POSITION, 0, N_STRUCT + stable_hash(t, tag_buckets)) for t in description_tags(condition)]
    prompt = condition.get("auto_prompt_audio_type") or ("file" if condition.get("prompt_audio_path") else None)
    if prompt:
        rows.append((PROMPT, NO_POSITION, 0, N_STRUCT + stable_hash(f"prompt:{prompt}".lower(), tag_buckets)))
    position = 0
    for section in split_sections(condition.get("lyric", "")):
        tag = STRUCTURE_TAGS.index(section.tag) + 1 if section.tag in STRUCTURE_TAGS else N_STRUCT - 1
        rows.append((STRUCT, NO_POSITION, 0, tag))
        if section.tag not in VOCAL_TAGS:
            continue
        for sentence in sentence_words(section.text):
            for word in sentence:
                if position < MAX_WORDS:
                    rows.append((WORD, position, stable_hash(word, word_buckets), 0))
                position += 1
            rows.append((STOP, NO_POSITION, 0, 0))
    rows = rows[:max_prefix] if max_prefix else rows
    columns = zip(*rows)
    return {name: torch.tensor(col, dtype=torch.long) for name, col in zip(("kind", "position", "word", "tag"), columns)}


def tag_vocab_size(tag_buckets: int) -> int:
    """Rows of the model's tag table: structure tags then the hashed description/prompt tags."""
    return N_STRUCT + tag_buckets
