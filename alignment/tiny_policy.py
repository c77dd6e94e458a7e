"""TinyPolicy lives with the tiny model (pipeline/models/tiny/policy.py), which offers it through
the trainable-policy contract; this name stays for the code and notebooks that import it here."""

from pipeline.models.tiny.policy import EOS_ID, VOCAB_CHUNK, TinyPolicy

__all__ = ["EOS_ID", "VOCAB_CHUNK", "TinyPolicy"]
