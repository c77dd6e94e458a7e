"""The `per` score kind: a transcriber (ASR) hears the vocals, `per.py` compares with the lyric.

Table `scores/per`: transcript, language, `per` (phoneme error rate x 100, the paper's units)
and `wer` (word error rate x 100). Backends under `scoring.transcriber`: pocketsphinx (embedded)
and whisper (production).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

import pyarrow as pa
from pydantic import Field

from pipeline.scoring.base import ScoringItem, Transcript
from pipeline.scoring.kind import ERROR_COLUMN, ID_COLUMNS, ScoreKind
from pipeline.scoring.pocketsphinx_asr import PocketsphinxOptions
from pipeline.scoring.whisper_asr import WhisperOptions

SILENCE_DBFS = -60.0  # a vocals stem whose peak is below this sings nothing

TranscriberOptions = Annotated[Union[PocketsphinxOptions, WhisperOptions], Field(discriminator="backend")]


class PerKind(ScoreKind):
    name = "per"
    schema = pa.schema([*ID_COLUMNS, ("transcript", pa.string()), ("language", pa.string()),
                        ("per", pa.float64()), ("wer", pa.float64()), ERROR_COLUMN])  # fmt: skip
    stems = ("vocals", "mix")  # LeVo's dual-track output lets ASR hear the voice alone
    config_key = "transcriber"
    backends = {
        "pocketsphinx": "pipeline.scoring.pocketsphinx_asr:PocketsphinxTranscriber",
        "whisper": "pipeline.scoring.whisper_asr:WhisperTranscriber",
    }
    options_annotation = TranscriberOptions
    default_options = PocketsphinxOptions
    order = 10
    column, meaning, title = "per", "phoneme error rate x100 (lower is better)", "phoneme error rate scores"
    tasks = ("text-to-audio", "automatic-speech-recognition")
    role = "transcriber (PER)"

    def skews(self, values: list[float]) -> list[str]:
        nothing = sum(v >= 100 for v in values)
        return [f"{nothing} of {len(values)} candidates have PER >= 100 (sang nothing recognisable, or far too much)"] if nothing else []

    def score(self, scorer, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
        return score_per(scorer, items, lyrics)


def score_per(transcriber, items: list[ScoringItem], lyrics: list[str]) -> list[dict]:
    """PER rows (transcript, language, per, wer, error) for items, transcribed with `transcriber`
    prepared on `lyrics` (the in-domain language model of the embedded ASR)."""
    from pipeline.scoring.per import error_rates_batch

    transcriber.prepare(lyrics)
    # A silent vocals stem is a song that sings nothing: an empty transcript (PER 100), not a failure.
    silent = {i for i, item in enumerate(items) if "vocals" in item.stems and is_silent(item.stems["vocals"])}
    heard = [item for i, item in enumerate(items) if i not in silent]
    transcripts = dict(zip((item.candidate_id for item in heard), transcriber.transcribe(heard)))
    transcripts.update({items[i].candidate_id: Transcript(items[i].candidate_id, "", items[i].language) for i in silent})
    transcripts = [transcripts[item.candidate_id] for item in items]
    rates = error_rates_batch([(i.lyric, t.text, i.language) for i, t in zip(items, transcripts)])
    rows = []
    for transcript, rate in zip(transcripts, rates):
        row = {"transcript": transcript.text, "language": transcript.language, "error": transcript.error}
        if row["error"] is None and isinstance(rate, Exception):
            row["error"] = f"error rate: {type(rate).__name__}: {rate}"
        elif row["error"] is None:
            row.update(per=rate.per, wer=rate.wer)
        rows.append(row)
    return rows


def is_silent(path: Path) -> bool:
    import numpy as np
    import soundfile

    try:
        audio, _ = soundfile.read(str(path), dtype="float32")
    except RuntimeError:
        return False  # unreadable: the transcriber reports it
    peak = float(np.max(np.abs(audio), initial=0.0))
    return peak <= 10 ** (SILENCE_DBFS / 20)


PER = PerKind()
