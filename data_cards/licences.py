"""Licences of the models and tools a round can involve, as their publishers state them.

Keyed by backend name as it appears in a stage's describe(). A backend not listed here is
reported as "not recorded" with a pointer to check it, rather than guessed: a reviewer must
know which licences were verified and which were not.
"""

from __future__ import annotations

PROJECT_LICENCE = "apache-2.0"  # songpref's own code, embedded models and generated data

# backend -> (licence, where it is stated)
KNOWN = {
    # song models
    "tiny": ("Apache-2.0", "songpref: pipeline/models/tiny/checkpoint/README.md"),
    "levo": ("see the LeVo (SongGeneration) checkpoint's own licence", "tencent-ailab/SongGeneration"),
    # lyrics generators
    "template": ("Apache-2.0", "songpref: pipeline/lyrics/wordbanks (no language model)"),
    # transcribers and the phonemizer behind PER
    "pocketsphinx": ("BSD-2-Clause (code and the bundled en-us model)", "cmusphinx/pocketsphinx"),
    "whisper": ("MIT (code and weights)", "openai/whisper"),
    "phonemizer": ("GPL-3.0", "bootphon/phonemizer"),
    "espeak-ng": ("GPL-3.0", "espeak-ng/espeak-ng"),
    # text-audio similarity
    "attributes": ("Apache-2.0", "songpref: pipeline/scoring/attributes.py (no learned weights)"),
    "muq-mulan": ("CC-BY-NC-4.0 (weights), MIT (code)", "OpenMuQ/MuQ-MuLan-large"),
    "clap": ("Apache-2.0 (laion/clap-htsat weights), CC0-1.0 (code)", "LAION-AI/CLAP"),
    # reward-model embeddings and the singing voice of the tiny renderer
    "features": ("Apache-2.0", "songpref: reward_model/embeddings.py (numpy descriptors)"),
    "muq": ("CC-BY-NC-4.0 (weights), MIT (code)", "OpenMuQ/MuQ-MuLan-large"),
    "flite": ("BSD-style (Flite licence)", "festvox/flite"),
}

UNRECORDED = ("not recorded by songpref: check the model's own card before redistributing", "")


def licence_row(role: str, model: str, backend: str) -> dict:
    """One row of a card's licence table."""
    licence, source = KNOWN.get(backend, UNRECORDED)
    return {"role": role, "model": model, "licence": licence, "source": source or "-"}
