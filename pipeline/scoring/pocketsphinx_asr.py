"""The `pocketsphinx` transcriber: the embedded default ASR (English only, CPU, offline).

Acoustic model and dictionary are the ones shipped in the pocketsphinx wheel. With `lyrics_lm`,
`prepare(lyrics)` writes an n-gram LM of the round's lyric sentences (`<s> ... </s>` each) by
interpolated absolute discounting (Ney's D = n1 / (n1 + 2 n2) per order) as a backoff ARPA file;
for this smoothing a context's backoff weight is exactly its interpolation weight D N1+(h) / c(h).
Its words are the lyrics' words cmudict knows, plus those espeak pronounces with phones that map
to CMU's; the rest cannot be decoded: reported (`unknown_words`), and no n-gram spans one. The LM
covers the whole round and backs off freely, so a candidate that skips or repeats words of its
lyric is heard doing so (measured in the tests) rather than sung the lyric back.

Audio is read as mono 16 kHz int16 and cut at silences into segments, each decoded as one
utterance with batch CMN: a vocals stem is silent between phrases, so segments match the LM's
sentences, silence costs no search, and no decoder state (live CMN) carries from song to song:
the same audio gives the same transcript in any order. `workers` spawned processes decode, one
decoder each.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import tempfile
import threading
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.digest import digest_bytes
from pipeline.lyrics.format import VOCAL_TAGS, split_sections
from pipeline.scoring.base import ScoringItem, Transcript
from pipeline.scoring.per import normalize, phonemes, words

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
FRAME = SAMPLE_RATE // 100  # 10 ms energy frames for segmentation


class PocketsphinxOptions(BaseModel):
    """Options of the pocketsphinx transcriber; defaults measured on flite-sung vocals stems."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["pocketsphinx"] = Field("pocketsphinx", description="Selects this transcriber.")
    lyrics_lm: bool = Field(True, description="Bias decoding with an n-gram LM of the round's lyrics "
                            "(prepare); False = the wheel's general English LM and full dictionary.")
    lm_order: int = Field(3, ge=1, le=5, description="Order of the in-domain n-gram LM.")
    workers: int = Field(2, ge=1, description="Decoding processes (one decoder each); 1 = in this process.")
    lw: float = Field(6.5, gt=0, description="Language model weight (pocketsphinx -lw).")
    beam: float = Field(1e-48, gt=0, le=1, description="HMM beam (pocketsphinx -beam): smaller = wider, slower.")
    wbeam: float = Field(7e-29, gt=0, le=1, description="Word-exit beam (pocketsphinx -wbeam).")
    # Both measured on 200 embedded songs against the sung truth (README, ASR): half the decoding
    # time, PER as well ordered (Pearson with the symbolic WER 0.974 either way, every gap-20 pair ordered).
    frame_downsample: int = Field(2, ge=1, le=4, description="Score the acoustic model on every n-th frame "
                                  "(pocketsphinx -ds); 1 = every frame.")  # fmt: skip
    second_pass: bool = Field(False, description="Rescore with pocketsphinx's flat-lexicon second pass (-fwdflat).")
    silence_db: float = Field(
        -35.0, le=0, description="Frames this far below the loudest 10 ms frame count as silence when segmenting.")
    min_gap_s: float = Field(0.3, ge=0, description="Silences at least this long split the audio into utterances.")
    silent_dbfs: float = Field(-60.0, le=0, description="Audio whose peak frame RMS is under this dBFS is an error.")
    min_duration_s: float = Field(0.2, ge=0, description="Shorter audio is an error, not an empty transcript.")


def model_paths() -> dict[str, str]:
    """The acoustic model, dictionary and general LM shipped in the pocketsphinx wheel."""
    from pocketsphinx import get_model_path

    root = Path(get_model_path()) / "en-us"
    return {"hmm": str(root / "en-us"), "dict": str(root / "cmudict-en-us.dict"), "lm": str(root / "en-us.lm.bin")}


def _cmudict(path: str) -> dict[str, tuple[str, ...]]:
    """word -> its dictionary lines (alternate pronunciations are `word(2) ...`): a copy the caller
    may extend. Parsed once per process: 135,000 lines take about a second, and a scorer prepares
    again for every scores shard and sweep point."""
    return dict(_parsed_cmudict(path))


@functools.lru_cache(maxsize=2)
def _parsed_cmudict(path: str) -> dict[str, tuple[str, ...]]:
    entries: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            entries[line.split(" ", 1)[0].split("(", 1)[0]].append(line.rstrip("\n"))
    return {word: tuple(lines) for word, lines in entries.items()}  # immutable: the cache is shared


def arpa_lm(sentences: list[list[str]], order: int) -> str:
    """A backoff ARPA model of `sentences` (interpolated absolute discounting, see module doc)."""
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    for sentence in sentences:
        tokens = ("<s>", *sentence, "</s>")
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                counts[n][tokens[i : i + n]] += 1
    del counts[1][("<s>",)]  # never predicted; listed with log-prob -99 as ARPA requires
    prob: dict[tuple, float] = {}
    backoff: dict[tuple, float] = {}
    for n in range(1, order + 1):
        hist = Counter(counts[n].values())
        d = min(max(hist[1] / (hist[1] + 2 * hist[2]) if hist[1] else 0.5, 0.1), 0.9)
        total, distinct = Counter(), Counter()
        for gram, c in counts[n].items():
            total[gram[:-1]] += c
            distinct[gram[:-1]] += 1
        for gram, c in counts[n].items():
            h = gram[:-1]
            gamma = d * distinct[h] / total[h]
            lower = prob[gram[1:]] if n > 1 else 1.0 / len(counts[1])
            prob[gram] = (c - d) / total[h] + gamma * lower
            backoff[h] = gamma
    grams = [g for n in range(1, order + 1) if (g := sorted(x for x in prob if len(x) == n))]
    grams[0].insert(0, ("<s>",))
    lines = ["\\data\\", *(f"ngram {n}={len(g)}" for n, g in enumerate(grams, 1))]
    for n, group in enumerate(grams, 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in group:
            logp = math.log10(prob[gram]) if gram in prob else -99.0
            bow = f" {math.log10(backoff[gram]):.6f}" if gram in backoff and n < len(grams) else ""
            lines.append(f"{logp:.6f} {' '.join(gram)}{bow}")
    return "\n".join([*lines, "", "\\end\\", ""])


def load_pcm(path: Path) -> np.ndarray:
    """Mono 16 kHz int16 samples of an audio file."""
    import soundfile as sf
    from scipy.signal import resample_poly

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(int(rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(rate) // g)
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def voiced_segments(pcm: np.ndarray, options: PocketsphinxOptions) -> list[np.ndarray]:
    """The audio cut at silences of at least `min_gap_s`, each piece padded by 0.1 s of context;
    ValueError with the reason when the audio is too short or silent."""
    if len(pcm) < options.min_duration_s * SAMPLE_RATE or len(pcm) < FRAME:
        raise ValueError(f"audio too short ({len(pcm) / SAMPLE_RATE:.2f} s)")
    frames = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME) / 32768.0
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    if db.max() < options.silent_dbfs:
        raise ValueError(f"silent audio (loudest 10 ms at {db.max():.1f} dBFS < {options.silent_dbfs} dBFS)")
    voiced = np.flatnonzero(db > db.max() + options.silence_db)
    gap, pad = max(1, round(options.min_gap_s * 100)), 10
    breaks = np.flatnonzero(np.diff(voiced) > gap)
    starts, ends = np.r_[voiced[0], voiced[breaks + 1]], np.r_[voiced[breaks], voiced[-1]]
    return [pcm[max(0, (a - pad) * FRAME) : (b + 1 + pad) * FRAME] for a, b in zip(starts, ends)]


_worker: dict = {}  # this process's decoder and options (a worker's, or the caller's when workers=1)


def _init_worker(config: dict, options_json: str) -> None:
    from pocketsphinx import Decoder

    _worker["options"] = PocketsphinxOptions.model_validate_json(options_json)
    _worker["decoder"] = Decoder(**config)


def _decode(path: str) -> tuple[str, str | None]:
    """(text, error) of one file in this worker."""
    try:
        segments = voiced_segments(load_pcm(Path(path)), _worker["options"])
    except Exception as exc:  # noqa: BLE001 - the item's error; the batch goes on
        return "", f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
    decoder, texts = _worker["decoder"], []
    for segment in segments:
        decoder.start_utt()
        decoder.process_raw(segment.tobytes(), full_utt=True)
        decoder.end_utt()
        if (hyp := decoder.hyp()) is not None and hyp.hypstr:
            texts.append(hyp.hypstr)
    return " ".join(texts), None


class PocketsphinxTranscriber:
    """Transcriber protocol over pocketsphinx (English only)."""

    name = "pocketsphinx"

    def __init__(self, options: PocketsphinxOptions | None = None):
        self.options = options or PocketsphinxOptions()
        self.unknown_words: list[str] = []  # lyric words neither cmudict nor espeak could pronounce
        self.espeak_words: dict[str, list[str]] = {}  # dictionary lines made from espeak's phones
        self._dir = self._lm_digest = None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def prepare(self, lyrics: list[str]) -> None:
        """Writes the in-domain LM and its dictionary from the round's lyrics (if `lyrics_lm`); the
        same LM as the one in use keeps it, and the worker processes already decoding with it."""
        if not self.options.lyrics_lm:
            self.close()
            return
        cmudict = _cmudict(model_paths()["dict"])
        sentences = [sentence for lyric in lyrics for sentence in _sentences(lyric)]
        missing = sorted({w for s in sentences for w in s} - cmudict.keys())
        self.espeak_words = _espeak_entries(missing)
        cmudict.update(self.espeak_words)
        vocab = sorted({w for s in sentences for w in s if w in cmudict})
        if not vocab:
            raise ValueError("no lyric word is in the pocketsphinx dictionary: cannot build a lyrics LM")
        self.unknown_words = unknown = [w for w in missing if w not in cmudict]
        if unknown:
            log.warning("pocketsphinx: %d lyric words cannot be decoded: %s", len(unknown), ", ".join(unknown[:20]))
        # n-grams across an unknown word would join words never sung together: split there.
        pieces = [r.split() for s in sentences for r in " ".join(w if w in cmudict else "\n" for w in s).split("\n")]
        arpa = arpa_lm([p for p in pieces if p], self.options.lm_order)
        dictionary = "\n".join(line for w in vocab for line in cmudict[w]) + "\n"
        digest = digest_bytes((arpa + "\0" + dictionary).encode())
        if self._dir is not None and digest == self._lm_digest:
            return
        self.close()
        self._dir = tempfile.mkdtemp(prefix="songpref-pocketsphinx-")
        Path(self._dir, "lyrics.arpa").write_text(arpa, encoding="utf-8")
        Path(self._dir, "lyrics.dict").write_text(dictionary, encoding="utf-8")
        self._lm_digest = digest

    def decoder_config(self) -> dict:
        paths, o = model_paths(), self.options
        config = {"hmm": paths["hmm"], "lm": paths["lm"], "dict": paths["dict"], "lw": o.lw, "beam": o.beam,
                  "wbeam": o.wbeam, "ds": o.frame_downsample, "fwdflat": o.second_pass, "cmn": "batch", "loglevel": "FATAL"}
        if o.lyrics_lm:
            if self._dir is None:
                raise RuntimeError("lyrics_lm is on: call prepare(lyrics) before transcribe")
            config.update(lm=str(Path(self._dir, "lyrics.arpa")), dict=str(Path(self._dir, "lyrics.dict")))
        return config

    def transcribe(self, items: list[ScoringItem]) -> list[Transcript]:
        out = [Transcript(item.candidate_id, language="en") for item in items]
        todo = []
        for i, item in enumerate(items):
            if (item.language or "").lower().replace("_", "-").split("-")[0] != "en":
                out[i].error = f"pocketsphinx is English-only; item language is {item.language!r}"
            else:
                todo.append(i)
        if not todo:
            return out
        paths = [str(items[i].audio_path) for i in todo]
        if self.options.workers == 1 or len(todo) == 1:
            key = (self.decoder_config(), self.options.model_dump_json())
            if _worker.get("key") != key:  # one decoder in this process, rebuilt when settings change
                _init_worker(*key)
                _worker["key"] = key
            results = [_decode(p) for p in paths]
        else:
            # Small chunks: songs differ in length, and the pool must stay balanced to the end.
            chunk = max(1, len(paths) // (8 * self.options.workers))
            results = list(self._executor().map(_decode, paths, chunksize=chunk))
        for i, (text, error) in zip(todo, results):
            out[i].text, out[i].error = text, error
        return out

    def _executor(self) -> ProcessPoolExecutor:
        import multiprocessing

        with self._lock:  # shards built on parallel threads share this transcriber
            if self._pool is None:  # spawn: forking a parent that holds torch threads or decoders is unsafe
                self._pool = ProcessPoolExecutor(
                    self.options.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(self.decoder_config(), self.options.model_dump_json()))
        return self._pool

    def describe(self) -> dict:
        from importlib.metadata import version

        return {"backend": "pocketsphinx", "version": version("pocketsphinx"),
                "acoustic_model": model_paths()["hmm"],
                "lm": "lyrics" if self.options.lyrics_lm else model_paths()["lm"],
                "lm_sha256": self._lm_digest or digest_bytes(Path(model_paths()["lm"]).read_bytes()),
                "unknown_words": self.unknown_words, "espeak_words": sorted(self.espeak_words),
                "options": self.options.model_dump(mode="json")}

    def close(self) -> None:
        """Stops the worker processes and removes the LM files."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown modules may be gone
            self.close()


def _sentences(lyric: str) -> list[list[str]]:
    """Word lists of the lyric's sung sentences ('.'-separated), normalised as PER sees them."""
    sung = (s.text for s in split_sections(lyric) if s.tag in VOCAL_TAGS or not s.tag)
    return [ws for text in sung for sentence in text.split(".") if (ws := words(normalize(sentence)))]


# espeak-ng en-us phones -> the acoustic model's CMU phones ("_" joins two), for lyric words
# cmudict lacks; espeak's r-coloured vowels are a vowel plus R in CMU.
_ARPABET = dict(pair.split("=") for pair in (
    "p=P b=B t=T d=D k=K ɡ=G f=F v=V θ=TH ð=DH s=S z=Z ʃ=SH ʒ=ZH h=HH m=M n=N ŋ=NG l=L ɹ=R j=Y w=W "
    "tʃ=CH dʒ=JH ɾ=T ʔ=T n̩=AH_N əl=AH_L æ=AE ɑː=AA ɑ=AA ɔː=AO ɔ=AO oː=AO ə=AH ʌ=AH ɐ=AH ɛ=EH ɜː=ER "
    "ɚ=ER ɪ=IH ᵻ=IH i=IY iː=IY iə=IY_AH ʊ=UH u=UW uː=UW eɪ=EY aɪ=AY aʊ=AW oʊ=OW ɔɪ=OY ɪɹ=IH_R ɛɹ=EH_R "
    "ʊɹ=UH_R oːɹ=AO_R ɔːɹ=AO_R ɑːɹ=AA_R aɪɚ=AY_ER aʊɚ=AW_ER").split())


def _espeak_entries(words: list[str]) -> dict[str, list[str]]:
    """Dictionary lines from espeak's phones; a word with a phone outside the map stays unknown."""
    lines = {}
    for word, phones in zip(words, phonemes(words, "en")):
        if phones and all(p in _ARPABET for p in phones):
            lines[word] = [f"{word} {' '.join(_ARPABET[p] for p in phones).replace('_', ' ')}"]
    return lines
