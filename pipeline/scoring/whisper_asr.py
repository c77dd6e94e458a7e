"""The `whisper` transcriber: openai-whisper over 30 s windows decoded in large batches.

Songs are cut into 30 s windows (whisper's own input length); windows whose RMS is under an
energy gate hold no vocals on a separated vocals stem and are skipped. Windows from many songs
are decoded together, `batch_windows` at a time, grouped by language (the sot sequence carries
one language token); a partial batch is padded to a few fixed sizes. Decoding is greedy and without timestamps: the phoneme error rate needs the
words only, and greedy decoding is deterministic. Each song's window texts are joined in order.

Windows are encoded `encode_windows` at a time as songs are read and decoded `batch_windows` at
a time (192 by default: on an H100 a large-v3 decoder step costs about 3.3 ms plus 0.15 ms per
window, so larger batches are cheaper per window; benchmarks/whisper_gpu.py measured 1,068x real
time at 192, 964x at 128, 908x at 64). Note that on a GPU a window's tokens can depend on the size
of the batch it is decoded in (cuBLAS picks kernels by shape), for either decoder.

`decoder="fast"` (whisper_fast.py) gives the same tokens as `decoder="reference"`
(`whisper.decode` on the batch) several times faster.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.scoring.base import ScoringItem, Transcript

SAMPLE_RATE = 16000  # whisper's input rate
WINDOW = 30 * SAMPLE_RATE
# Languages written without spaces between words: their window texts are joined without one.
_UNSPACED = {"zh", "yue", "ja", "th", "lo", "my", "bo", "km"}


class WhisperOptions(BaseModel):
    """Options of the whisper transcriber. Decoding is greedy (temperature 0) without timestamps."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["whisper"] = Field("whisper", description="Selects this transcriber.")
    checkpoint: str = Field(..., description="An official model name (e.g. 'large-v3') or a local .pt checkpoint.",
                            json_schema_extra={"needs": "model"})
    download_root: str | None = Field(None, description="Where official models are cached; None = whisper's default.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' = cuda when available, else cpu.")
    fp16: bool | None = Field(None, description="Half-precision inference; None = on for cuda, off for cpu.")
    batch_windows: int = Field(
        192, ge=1, description="30 s windows, from many songs, decoded together. A fast-decoder step costs "
        "about 3 ms plus 0.15 ms per window (large-v3, H100), so large batches share the fixed part; the "
        "caches take about 280 MB per window for large-v3 (about 55 GB at 192, 66 GB peak with the model): "
        "lower this on a GPU of less than 80 GB.")
    encode_windows: int = Field(
        32, ge=1, description="Windows encoded together as songs are read, until batch_windows wait for the "
        "decoder: the encoder is as fast per window at 32 as at 128, and its work overlaps reading audio.")
    pad_multiple: int = Field(
        8, ge=1, description="A partial batch is padded with copies of its last window (their tokens are "
        "dropped) up to a multiple of this, at most batch_windows, so that few batch sizes occur and "
        "their captured CUDA graphs are reused across calls; 1 = no padding, batch_windows = every "
        "batch full size. Both decoders decode the same padded batch.")
    language: str | None = Field(
        None, description="Whisper language code for every item; None = each item's own language "
        "(detected per window when whisper does not know it).")
    max_tokens: int = Field(224, ge=1, le=224, description="Tokens decoded at most per 30 s window.")
    vad_threshold_db: float = Field(
        -50.0, description="Energy gate: windows whose RMS is below this dBFS hold no vocals and are skipped.")
    min_duration_s: float = Field(0.5, ge=0, description="Shorter audio is an error, not an empty transcript.")
    decoder: Literal["fast", "reference"] = Field(
        "fast", description="'fast' = static-cache greedy decoder with identical tokens; 'reference' = whisper.decode.")
    cuda_graphs: bool = Field(True, description="fast decoder on cuda: replay each step as captured CUDA graphs.")
    decoder_attention: Literal["flash", "efficient", "matmul", "cudnn", "splitkv"] = Field(
        "flash", description="Attention of both decoders on cuda: 'flash' = flash first, else memory-efficient; "
        "'efficient' = memory-efficient; 'matmul' = whisper's own attention without SDPA (batched matrix "
        "products: a decoding step reads the cross-attention cache once); 'cudnn' = cuDNN's kernel first "
        "(on an H100 the fastest at one query row, 1.25x flash's scorer, but not repeatable: two runs "
        "of whisper.decode gave different tokens, so PER may change between runs); 'splitkv' = a Triton "
        "split-KV kernel for every one-row step attention, deterministic by construction, skipping windows "
        "that have finished (on an H100 with compile_encoder about 1.4x flash's scorer; needs Triton; "
        "elsewhere whisper's own path runs). Tokens may differ between kernels.")
    compile_encoder: bool = Field(
        False, description="Run the encoder through torch.compile (on an H100 about 1.4x faster; its states "
        "differ from the eager encoder's in the last bits, so a transcript may differ from an uncompiled run's).")
    suppress_tokens: str = Field(
        "-1", description="Comma-separated token ids never decoded; -1 = whisper's non-speech symbols.")
    suppress_blank: bool = Field(True, description="Forbid a blank or end-of-text as a window's first token.")


@dataclass
class _Window:
    item: int  # index into the items being transcribed
    index: int  # the window's place in its song
    language: str | None  # None = detect
    audio: np.ndarray


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz."""
    import soundfile as sf
    from scipy.signal import resample_poly

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = np.gcd(int(rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return audio


def rms_dbfs(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-10))


def whisper_language(code: str | None) -> str | None:
    """A whisper language code for `code` ('en', 'en-US', 'english', 'zh_CN'), or None if unknown."""
    from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    if not code:
        return None
    code = code.strip().lower()
    for candidate in (code, code.replace("_", "-").split("-")[0]):
        if candidate in LANGUAGES:
            return candidate
        if candidate in TO_LANGUAGE_CODE:
            return TO_LANGUAGE_CODE[candidate]
    return None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prefetch(fn, args, ahead: int = 16):
    """`fn(*a)` for each `a`, in order, computed up to `ahead` items early on threads: reading and
    resampling audio (which release the GIL) overlaps decoding, and memory stays bounded."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="whisper-audio") as pool:
        queue: deque = deque()
        for a in args:
            queue.append(pool.submit(fn, *a))
            if len(queue) > ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


class WhisperTranscriber:
    """Transcriber protocol over openai-whisper. `model` may be given already loaded (benchmarks)."""

    name = "whisper"

    def __init__(self, options: WhisperOptions, model=None):
        self.options = options
        self._model = model
        self._sha256: str | None = None
        self._compiled_encoder = None  # torch.compile of the encoder, made on first use (compile_encoder)

    # -- model ------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            import torch
            import whisper

            device = self.options.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = whisper.load_model(self.options.checkpoint, device=device,
                                             download_root=self.options.download_root)
            self._model.eval()
        return self._model

    @property
    def fp16(self) -> bool:
        fp16 = self.options.fp16
        return self.model.device.type == "cuda" if fp16 is None else fp16

    def decoding_options(self, language: str | None):
        import whisper

        if not self.model.is_multilingual:
            language = "en"  # English-only models have no language token to set or detect
        return whisper.DecodingOptions(
            task="transcribe", language=language, temperature=0.0, sample_len=self.options.max_tokens,
            suppress_tokens=self.options.suppress_tokens, suppress_blank=self.options.suppress_blank,
            without_timestamps=True, fp16=self.fp16)

    # -- protocol ---------------------------------------------------------------------------------
    def prepare(self, lyrics: list[str]) -> None:
        """Nothing to prepare: whisper has no in-domain language model to build."""

    def describe(self) -> dict:
        import whisper

        checkpoint = self.options.checkpoint
        if self._sha256 is None:
            if Path(checkpoint).is_file():
                self._sha256 = file_sha256(checkpoint)
            elif checkpoint in whisper._MODELS:  # the official URLs carry the file's sha256
                self._sha256 = whisper._MODELS[checkpoint].split("/")[-2]
        return {"backend": self.name, "checkpoint": checkpoint, "checkpoint_sha256": self._sha256,
                "whisper_version": whisper.__version__, "options": self.options.model_dump(mode="json")}

    def transcribe(self, items: list[ScoringItem]) -> list[Transcript]:
        out: list[Transcript | None] = [None] * len(items)
        texts: dict[int, dict[int, str]] = defaultdict(dict)
        languages: dict[int, list[str]] = defaultdict(list)
        pending: dict[str | None, list[_Window]] = defaultdict(list)

        # Windows wait in `pending` for the encoder, then as encoder output in `encoded` for the
        # decoder. Encoding a few windows at a time as they are read overlaps the GPU's work with
        # reading audio, keeps the encoder's activations small, and frees each window's samples.
        encoded: dict[str | None, list] = defaultdict(list)  # (windows, features) chunks
        bw, ew = self.options.batch_windows, self.options.encode_windows

        def encode(language):
            ws, pending[language] = pending[language], []
            encoded[language].append((ws, self.encode(self.log_mel([w.audio for w in ws]))))
            for w in ws:
                w.audio = None

        def decode(language):
            chunks, encoded[language] = encoded[language], []
            ws = [w for c in chunks for w in c[0]]
            features = chunks[0][1] if len(chunks) == 1 else self._cat([c[1] for c in chunks])
            del chunks
            for w, (text, lang) in zip(ws, self._decode_features(features, language)):
                texts[w.item][w.index] = text
                languages[w.item].append(lang)

        def n_encoded(language):
            return sum(len(c[0]) for c in encoded[language])

        for i, (item, (windows, error)) in enumerate(zip(items, _prefetch(self._windows, enumerate(items)))):
            if error:
                out[i] = Transcript(item.candidate_id, error=error)
                continue
            for w in windows:
                pending[w.language].append(w)
                done = n_encoded(w.language)
                if len(pending[w.language]) >= min(ew, bw - done):
                    encode(w.language)
                    if done + len(encoded[w.language][-1][0]) >= bw:
                        decode(w.language)  # bounded memory: a round's audio is never all held at once
        for language in list(pending):
            if pending[language]:
                encode(language)
            if encoded[language]:
                decode(language)

        for i, item in enumerate(items):
            if out[i] is None:
                lang = max(set(languages[i]), key=languages[i].count)
                sep = "" if lang in _UNSPACED else " "
                text = sep.join(t for _, t in sorted(texts[i].items()) if t)
                out[i] = Transcript(item.candidate_id, text=text, language=lang)
        return out

    # -- steps ------------------------------------------------------------------------------------
    def _windows(self, i: int, item: ScoringItem) -> tuple[list[_Window], str | None]:
        try:
            audio = load_audio(item.audio_path)
        except Exception as e:  # soundfile raises its own error types, and OSError for missing files
            return [], f"unreadable audio: {type(e).__name__}: {e}"
        if audio.size < self.options.min_duration_s * SAMPLE_RATE or audio.size == 0:
            return [], f"too short: {audio.size / SAMPLE_RATE:.2f} s < {self.options.min_duration_s} s"
        if not np.isfinite(audio).all():
            return [], "audio holds NaN or infinite samples"
        language = whisper_language(self.options.language or item.language)
        windows = [_Window(i, j, language, audio[s:s + WINDOW]) for j, s in enumerate(range(0, audio.size, WINDOW))]
        kept = [w for w in windows if rms_dbfs(w.audio) >= self.options.vad_threshold_db]
        if not kept:
            return [], f"no vocals: every 30 s window is below {self.options.vad_threshold_db} dBFS"
        return kept, None

    def log_mel(self, windows: list[np.ndarray]):
        """Whisper's log-mel of each window (padded with zeros to 30 s), stacked: (n, n_mels, 3000).
        `whisper.log_mel_spectrogram` over the windows at once: one copy to the device and one
        short-time Fourier transform for all, each window clipped to 8 below its own maximum."""
        import torch
        from whisper.audio import HOP_LENGTH, N_FFT, mel_filters

        n_mels, device = self.model.dims.n_mels, self.model.device
        audio = np.zeros((len(windows), WINDOW), dtype=np.float32)
        for row, a in zip(audio, windows):
            row[: min(a.size, WINDOW)] = a[:WINDOW]
        x = torch.from_numpy(audio).to(device)
        stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT).to(device), return_complex=True)
        magnitudes = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(mel_filters(device, n_mels) @ magnitudes, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0

    def encode(self, mel):
        """Encoder output for a mel batch, in the decoding dtype, as `whisper.decode` computes it."""
        import torch

        from pipeline.scoring.whisper_fast import deterministic_attention

        encoder = self.model.encoder
        if self.options.compile_encoder:
            if self._compiled_encoder is None:
                self._compiled_encoder = torch.compile(encoder)
            encoder = self._compiled_encoder
        with torch.no_grad(), deterministic_attention():
            return encoder(mel.half() if self.fp16 else mel)

    def padded_size(self, n: int) -> int:
        """The batch size `n` windows are decoded in: rounded up to `pad_multiple`, at most
        `batch_windows` (and never fewer than n)."""
        m = self.options.pad_multiple
        return max(n, min(-(-n // m) * m, self.options.batch_windows))

    @staticmethod
    def _cat(tensors):
        import torch

        return torch.cat(tensors)

    def _decode_features(self, features, language: str | None) -> list[tuple[str, str]]:
        """Text and language of each row of encoder output, decoded padded to `padded_size`."""
        import torch

        n = len(features)
        size = self.padded_size(n)
        if size > n:  # dummy rows after the encoder: no encoder time is spent on them
            features = torch.cat([features, features[-1:].expand(size - n, *features.shape[1:])])
        tokens, langs = self.decode_tokens(features, language, rows=n)
        tokenizer = self._tokenizer()
        return [(tokenizer.decode(t).strip(), lang) for t, lang in zip(tokens[:n], langs[:n])]

    def _tokenizer(self):
        from whisper.tokenizer import get_tokenizer

        m = self.model
        return get_tokenizer(m.is_multilingual, num_languages=m.num_languages, task="transcribe")

    def decode_tokens(self, mel, language: str | None, decoder: str | None = None,
                      rows: int | None = None) -> tuple[list[list[int]], list[str]]:
        """Encode and greedily decode a mel batch (or encoder output, as `whisper.decode` accepts) with
        one language (None = detect per window): each window's tokens and the language decoded in.
        `rows`: only the first rows are wanted (padding follows): the fast decoder stops the others."""
        import whisper

        from pipeline.scoring.whisper_fast import deterministic_attention

        decoder = decoder or self.options.decoder
        options = self.decoding_options(language)
        dims = self.model.dims
        features = mel if mel.shape[-2:] == (dims.n_audio_ctx, dims.n_audio_state) else self.encode(mel)
        with deterministic_attention(self.options.decoder_attention):
            if decoder == "reference":
                results = whisper.decode(self.model, features, options)
                return [r.tokens for r in results], [r.language for r in results]
            return self._fast(features, options, rows)

    def _fast(self, features, options, rows: int | None = None) -> tuple[list[list[int]], list[str]]:
        import torch

        from pipeline.scoring.whisper_fast import greedy_decode, greedy_plan

        plan = greedy_plan(self.model, options)
        initial = torch.tensor([plan.initial_tokens] * len(features), dtype=torch.long)
        langs = [options.language] * len(features)
        if options.language is None:
            tokenizer = self._tokenizer()
            with torch.no_grad():
                lang_tokens, probs = self.model.detect_language(features, tokenizer)
            initial[:, plan.sot_index + 1] = lang_tokens.cpu()
            langs = [max(p, key=p.get) for p in probs]
        return greedy_decode(self.model, features, plan, initial, cuda_graphs=self.options.cuda_graphs, rows=rows), langs
