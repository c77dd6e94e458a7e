"""DPO with TRL: MultiStreamDPOTrainer and `train_dpo` (a run's options: `alignment.dpo.options`).

Any Hugging Face causal LM (a YuE-style song LM) trains with TRL's DPOTrainer as it is. The
tiny multi-stream policy (`TinyPolicy`) computes TRL's per-token log-probs itself over all of
its streams, so `MultiStreamDPOTrainer` only keeps DPOTrainer from patching it with a
single-head fused LM head; everything else (loss types, reference handling and precomputed
reference log-probs, PEFT, logging, checkpointing and resuming) is TRL's own.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path

import torch
import trl.trainer.dpo_trainer as dpo_module
from trl import DPOTrainer

from alignment.dpo.options import DpoOptions

_fused_lm_head = dpo_module.add_fused_lm_head


def _fused_head_unless_native(model, *args, **kwargs):
    if getattr(model, "computes_fused_log_probs", False):
        return  # the model already returns TRL's per-token log-probs over all of its streams
    _fused_lm_head(model, *args, **kwargs)


@contextlib.contextmanager
def _native_fused_log_probs():
    dpo_module.add_fused_lm_head = _fused_head_unless_native
    try:
        yield
    finally:
        dpo_module.add_fused_lm_head = _fused_lm_head


class MultiStreamDPOTrainer(DPOTrainer):
    """DPOTrainer for policies whose forward already meets TRL's fused-log-prob contract
    (`computes_fused_log_probs = True`, e.g. TinyPolicy); other models behave as in DPOTrainer."""

    def __init__(self, *args, **kwargs):
        with _native_fused_log_probs():
            super().__init__(*args, **kwargs)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder of a run (Trainer writes trainer_state.json last)."""
    done = [p for p in Path(output_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train_dpo(model, tokenizer, train_dataset, options: DpoOptions, output_dir: Path, seed: int,
              eval_dataset=None, callbacks=None, processes: int = 1, sharding: str = "ddp",
              save_to: Path | None = None) -> tuple[object, dict]:  # fmt: skip
    """Train (resuming from the newest checkpoint in output_dir), then evaluate on eval_dataset.

    With processes > 1 every process of a torch.distributed launch calls this alike
    (`alignment.dpo.distributed`); `save_to` then receives the trained model, gathered whole.
    Returns the trained model (a PeftModel with LoRA) and the metrics: TRL's training log and its
    final eval metrics (reward accuracy, margins, chosen/rejected log-probs)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    if len(train_dataset) == 0:
        raise ValueError("DPO: the training split has no pairs")
    if options.pack_rows:
        if not hasattr(model, "pack_rows"):
            raise ValueError(f"dpo.pack_rows needs a policy that packs its rows (the tiny model's); "
                             f"{type(model).__name__} does not")  # fmt: skip
        model.pack_rows = True  # before the reference copy below, so both run packed
    # Without precomputed log-probs and without LoRA, TRL would rebuild the reference from the
    # model's path through the Auto classes, which know neither in-memory models nor the tiny policy.
    reference = None
    if not options.precomputes(len(train_dataset)) and options.lora is None:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    # FSDP shards block by block: the tiny policy's are Llama blocks; a Hugging Face model names its own.
    wrap = ["LlamaDecoderLayer"] if getattr(model, "computes_fused_log_probs", False) else None
    args = options.dpo_config(output_dir, seed, processes, sharding, wrap, pairs=len(train_dataset))
    trainer = MultiStreamDPOTrainer(
        model=model, ref_model=reference, args=args, train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=options.peft_config(), callbacks=callbacks,
    )  # fmt: skip
    resume = last_checkpoint(output_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = {"train": {k: _plain(v) for k, v in result.metrics.items()}, "resumed_from": resume.name if resume else None,
               "log": [{k: _plain(v) for k, v in row.items()} for row in trainer.state.log_history],
               "distributed": str(trainer.accelerator.distributed_type.value)}  # NO, MULTI_GPU, MULTI_CPU, FSDP  # fmt: skip
    if eval_dataset is not None and len(eval_dataset):
        metrics["eval"] = {k: _plain(v) for k, v in trainer.evaluate().items()}
    if save_to is not None:
        trainer.save_model(str(save_to))  # every process takes part (FSDP gathers the shards); the main one writes
    return trainer.model, metrics


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool, type(None))) else json.loads(json.dumps(value, default=str))
