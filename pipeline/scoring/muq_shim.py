"""Makes the `muq` package (MuQ / MuQ-MuLan, v0.1.0) import and run with this project's stack.

`muq` was written against torchaudio, x_clip and transformers 4.x. Here torch is a CPU build that the
registry's torchaudio/torchvision (CUDA builds) do not load with, and transformers is 5.x. Installed
with `pip install --no-deps muq` plus `einops` and `easydict`, the package needs exactly three
things, and this module supplies them without touching the package's files:

1. `torchaudio.transforms` — `muq/muq/modules/features.py` computes MuQ's input features with
   `MelSpectrogram(sample_rate=24000, n_fft=2048, hop_length=240, n_mels=128)` and
   `AmplitudeToDB()`; `muq_mulan/models/audio.py` imports `Spectrogram`, `TimeStretch`,
   `FrequencyMasking`, `TimeMasking` at module level for an audio tower MuQ-MuLan does not use.
   When torchaudio cannot be imported, a stub `torchaudio` module is placed in `sys.modules` for
   the duration of `import muq` only: `MelSpectrogram`, `Spectrogram` and `AmplitudeToDB` are
   re-implemented in plain torch with torchaudio's defaults (periodic Hann window, centred reflect
   padding, power 2, HTK mel scale without filter normalisation, 10*log10 with amin 1e-10), so the
   features match torchaudio's; the augmentation classes raise if constructed.
2. `x_clip.tokenizer.tokenizer` — `muq_mulan/models/text.py` reads its `vocab_size` as a default
   argument of a from-scratch text tower that MuQ-MuLan does not use (it uses XLM-RoBERTa). The
   real module imports torchvision, so a stub with CLIP's vocabulary size (49408) stands in, again
   only while `muq` is imported; calling its `tokenize` raises.
3. transformers 5 removed `output_hidden_states` from `Wav2Vec2ConformerEncoder.forward` (hidden
   states are now recorded by hooks on a `PreTrainedModel`, which MuQ does not use) and reads
   attributes such as `_attn_implementation` that MuQ's plain `EasyDict` config lacks. While a
   MuQ model is being constructed (`conformer_compat()`), the encoder class that MuQ imports is
   swapped for a subclass with the same parameters (state-dict keys unchanged) that turns the
   `EasyDict` into a `Wav2Vec2ConformerConfig` and returns transformers 4.x's `hidden_states`:
   the input of every layer, then the final layer-normed output.

The stubs are removed from `sys.modules` again once `muq` is imported (its modules keep their
references), so other code in the process never sees a fake torchaudio.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import math
import sys
import types

CLIP_VOCAB_SIZE = 49408  # x_clip's SimpleTokenizer.vocab_size, the value muq reads at import
_CONFIG_META_KEYS = ("model_type", "transformers_version", "architectures", "torch_dtype", "_name_or_path")


def _torchaudio_importable() -> bool:
    try:
        importlib.import_module("torchaudio.transforms")
        return True
    except Exception:  # a CUDA build next to a CPU torch raises OSError/ImportError/RuntimeError
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        return False


def _x_clip_importable() -> bool:
    try:
        importlib.import_module("x_clip.tokenizer")
        return True
    except Exception:
        for name in [n for n in sys.modules if n == "x_clip" or n.startswith("x_clip.")]:
            del sys.modules[name]
        return False


def _torchaudio_stub() -> dict[str, types.ModuleType]:
    import torch
    from torch import nn

    class Spectrogram(nn.Module):
        def __init__(self, n_fft=400, win_length=None, hop_length=None, pad=0, window_fn=torch.hann_window,
                     power=2.0, normalized=False, wkwargs=None, center=True, pad_mode="reflect", onesided=True):
            super().__init__()
            self.n_fft, self.pad, self.power = n_fft, pad, power
            self.win_length = win_length or n_fft
            self.hop_length = hop_length or self.win_length // 2
            self.center, self.pad_mode, self.onesided, self.normalized = center, pad_mode, onesided, normalized
            self.register_buffer("window", window_fn(self.win_length, **(wkwargs or {})))

        def forward(self, waveform):
            if self.pad > 0:
                waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad), "constant")
            shape = waveform.shape
            flat = waveform.reshape(-1, shape[-1])
            spec = torch.stft(flat, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                              window=self.window, center=self.center, pad_mode=self.pad_mode,
                              normalized=False, onesided=self.onesided, return_complex=True)
            if self.normalized:
                spec = spec / self.window.pow(2.0).sum().sqrt()
            spec = spec.reshape(shape[:-1] + spec.shape[-2:])
            return spec.abs().pow(self.power) if self.power is not None else spec

    def _hz_to_mel(freq: float) -> float:
        return 2595.0 * math.log10(1.0 + freq / 700.0)

    def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
        m_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
        f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        down = -slopes[:, :-2] / f_diff[:-1]
        up = slopes[:, 2:] / f_diff[1:]
        return torch.clamp(torch.min(down, up), min=0.0)  # (n_freqs, n_mels)

    class MelSpectrogram(nn.Module):
        def __init__(self, sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0,
                     f_max=None, pad=0, n_mels=128, window_fn=torch.hann_window, power=2.0,
                     normalized=False, wkwargs=None, center=True, pad_mode="reflect", onesided=None,
                     norm=None, mel_scale="htk"):
            super().__init__()
            if norm is not None or mel_scale != "htk":
                raise NotImplementedError("the torchaudio stand-in implements the HTK mel scale without norm only")
            self.spectrogram = Spectrogram(n_fft=n_fft, win_length=win_length, hop_length=hop_length, pad=pad,
                                           window_fn=window_fn, power=power, normalized=normalized,
                                           wkwargs=wkwargs, center=center, pad_mode=pad_mode, onesided=True)
            f_max = f_max if f_max is not None else float(sample_rate // 2)
            self.register_buffer("fb", melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate))

        def forward(self, waveform):
            spec = self.spectrogram(waveform)
            return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)

    class AmplitudeToDB(nn.Module):
        def __init__(self, stype="power", top_db=None):
            super().__init__()
            self.multiplier = 10.0 if stype == "power" else 20.0
            self.amin, self.top_db = 1e-10, top_db

        def forward(self, x):
            x_db = self.multiplier * torch.log10(torch.clamp(x, min=self.amin))  # ref 1.0: no offset
            if self.top_db is not None:
                x_db = torch.max(x_db, x_db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
            return x_db

    def _unavailable(name):
        class Unavailable(nn.Module):
            def __init__(self, *args, **kwargs):
                raise NotImplementedError(f"torchaudio.transforms.{name} is not available (torchaudio stand-in)")
        Unavailable.__name__ = name
        return Unavailable

    root = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    for cls in (Spectrogram, MelSpectrogram, AmplitudeToDB):
        setattr(transforms, cls.__name__, cls)
    for name in ("TimeStretch", "FrequencyMasking", "TimeMasking"):
        setattr(transforms, name, _unavailable(name))
    root.transforms = transforms
    root.__songpref_stub__ = True
    return {"torchaudio": _as_package(root), "torchaudio.transforms": _as_package(transforms)}


def _x_clip_stub() -> dict[str, types.ModuleType]:
    class _Tokenizer:
        vocab_size = CLIP_VOCAB_SIZE

        def tokenize(self, *args, **kwargs):
            raise NotImplementedError("x_clip's tokenizer is not available (stand-in for muq's unused text tower)")

    root = types.ModuleType("x_clip")
    tok = types.ModuleType("x_clip.tokenizer")
    tok.tokenizer = _Tokenizer()
    root.tokenizer = tok
    return {"x_clip": _as_package(root), "x_clip.tokenizer": _as_package(tok)}


def _settle_transformers() -> None:
    """Import what `muq` takes from transformers before any stub exists.

    transformers decides once per process (lru_cache) whether torchaudio is installed; that answer
    must come from the real environment, not from a stand-in seen during `import muq`.
    """
    from transformers.utils import import_utils

    import_utils.is_torchaudio_available()
    import_utils.is_torchvision_available()
    from transformers import (  # noqa: F401  (the names muq imports; transformers loads them lazily)
        AutoModel, AutoModelForCausalLM, AutoTokenizer, Wav2Vec2FeatureExtractor, XLMRobertaModel,
    )
    from transformers.models.wav2vec2_conformer import modeling_wav2vec2_conformer  # noqa: F401


def _as_package(module: types.ModuleType) -> types.ModuleType:
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    return module


def import_muq():
    """Import and return the `muq` package, with stand-ins for what this environment lacks."""
    if "muq" in sys.modules:
        return sys.modules["muq"]
    _settle_transformers()
    stubs: dict[str, types.ModuleType] = {}
    if not _torchaudio_importable():
        stubs.update(_torchaudio_stub())
    if not _x_clip_importable():
        stubs.update(_x_clip_stub())
    sys.modules.update(stubs)
    try:
        return importlib.import_module("muq")
    finally:
        for name in stubs:
            sys.modules.pop(name, None)


def uses_torchaudio_stand_in() -> bool:
    """Whether the imported `muq` computes its features with this module's torchaudio stand-in."""
    features = sys.modules.get("muq.muq.modules.features")
    return bool(features is not None and getattr(features.torchaudio, "__songpref_stub__", False))


def _compat_encoder_class(base):
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.wav2vec2_conformer.configuration_wav2vec2_conformer import Wav2Vec2ConformerConfig

    class ConformerEncoderWithHiddenStates(base):
        """`Wav2Vec2ConformerEncoder` with transformers 4.x's forward contract, which MuQ relies on."""

        def __init__(self, config, attn_implementation: str = "sdpa"):
            if not isinstance(config, Wav2Vec2ConformerConfig):
                fields = {k: v for k, v in dict(config).items() if k not in _CONFIG_META_KEYS}
                config = Wav2Vec2ConformerConfig(**fields)
            config._attn_implementation = attn_implementation
            super().__init__(config)

        def forward(self, hidden_states, attention_mask=None, output_hidden_states=False, **kwargs):
            mask = None
            if attention_mask is not None:
                from transformers.masking_utils import create_bidirectional_mask

                hidden_states = hidden_states.masked_fill(~attention_mask.bool().unsqueeze(-1), 0.0)
                mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states,
                                                 attention_mask=attention_mask)
            hidden_states = self.dropout(hidden_states)
            positions = self.embed_positions(hidden_states) if self.embed_positions is not None else None
            states = []
            for layer in self.layers:  # no LayerDrop: inference only
                states.append(hidden_states)
                out = layer(hidden_states, attention_mask=mask, relative_position_embeddings=positions)
                hidden_states = out[0] if isinstance(out, tuple) else out
            hidden_states = self.layer_norm(hidden_states)
            states.append(hidden_states)
            return BaseModelOutput(last_hidden_state=hidden_states,
                                   hidden_states=tuple(states) if output_hidden_states else None)

    return ConformerEncoderWithHiddenStates


@contextlib.contextmanager
def conformer_compat():
    """Build MuQ models inside this block so their conformer follows the 4.x contract (see above)."""
    import transformers
    from transformers.models.wav2vec2_conformer import modeling_wav2vec2_conformer as w2v

    if int(transformers.__version__.split(".")[0]) < 5:
        yield
        return
    original = w2v.Wav2Vec2ConformerEncoder
    w2v.Wav2Vec2ConformerEncoder = _compat_encoder_class(original)
    try:
        yield
    finally:
        w2v.Wav2Vec2ConformerEncoder = original
