"""Sampling a song model from other weights: the sweep (a merged point), the ablation and a
parent round (its chosen policy) point the model's options at a folder.

A plugin names the options key that holds its weights in the class attribute
`checkpoint_option` (LeVo: `checkpoint_dir`); without it, `checkpoint` is used where the options
class has that field. A backend with neither cannot sample from other weights, and saying so
here, naming the backend, beats an "extra inputs are not permitted" from its options class.
"""

from __future__ import annotations

from pathlib import Path


class NoCheckpointOption(ValueError):
    pass


def checkpoint_option(backend: str) -> str:
    """The options key of `backend` that names the weights it samples from."""
    from pipeline.models.registry import song_model_class

    cls = song_model_class(backend)
    key = getattr(cls, "checkpoint_option", None) or ("checkpoint" if "checkpoint" in cls.options_class.model_fields else None)
    if key is None:
        raise NoCheckpointOption(f"model.backend {backend!r} cannot sample from other weights: its options have no checkpoint "
                                 "key (set `checkpoint_option` on the plugin class to the key that names its weights)")  # fmt: skip
    return key


def options_with_checkpoint(backend: str, options: dict, folder: str | Path) -> dict:
    """`options` (the config's model.options) with the backend's checkpoint key set to `folder`."""
    return {**options, checkpoint_option(backend): str(folder)}
