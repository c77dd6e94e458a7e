"""DPO with TRL: DpoOptions (what a run trains), MultiStreamDPOTrainer, and `train_dpo`.

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
from typing import Literal

import torch
import trl.trainer.dpo_trainer as dpo_module
from pydantic import BaseModel, ConfigDict, Field
from trl import DPOConfig, DPOTrainer

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


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="Module names that get adapters."
    )


class DpoOptions(BaseModel):
    """One DPO run. Every field maps onto TRL's DPOConfig (named alongside) or PEFT's LoraConfig."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="DPOConfig.beta: strength of the pull towards the reference.")
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], description="DPOConfig.loss_type (TRL's names).")
    learning_rate: float = Field(5e-5, gt=0, description="DPOConfig.learning_rate.")
    epochs: float = Field(1.0, gt=0, description="DPOConfig.num_train_epochs.")
    max_steps: int = Field(-1, description="DPOConfig.max_steps; -1: as many as `epochs` give.")
    batch_size: int = Field(4, ge=1, description="Pairs per device and step (DPOConfig.per_device_train_batch_size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="DPOConfig.gradient_accumulation_steps.")
    warmup_steps: int = Field(0, ge=0, description="DPOConfig.warmup_steps.")
    lora: LoraOptions | None = Field(None, description="Train a LoRA adapter instead of every weight; null: full fine-tuning.")
    precompute_ref_log_probs: bool = Field(
        True, description="DPOConfig.precompute_ref_log_probs: score every pair with the reference once, before training."
    )
    max_length: int | None = Field(
        None, description="DPOConfig.max_length; null: no truncation (a truncated tiny song cannot be scored)."
    )
    save_steps: int = Field(10, ge=1, description="Checkpoint every this many steps (a killed run resumes from the last).")
    logging_steps: int = Field(1, ge=1, description="DPOConfig.logging_steps.")
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="DPOConfig.report_to (tensorboard, wandb, ...).")
    gradient_checkpointing: bool = Field(
        False, description="DPOConfig.gradient_checkpointing (TRL's default is on; the tiny policy does not support it)."
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's default.")
    device: Literal["auto", "cpu"] = Field("auto", description="'cpu' forces the CPU even where a GPU is present.")

    def dpo_config(self, output_dir: Path, seed: int) -> DPOConfig:
        return DPOConfig(
            output_dir=str(output_dir), seed=seed, data_seed=seed, beta=self.beta, loss_type=self.loss_type,
            learning_rate=self.learning_rate, num_train_epochs=self.epochs, max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, warmup_steps=self.warmup_steps,
            precompute_ref_log_probs=self.precompute_ref_log_probs, max_length=self.max_length,
            save_strategy="steps", save_steps=self.save_steps, save_total_limit=2, logging_steps=self.logging_steps,
            report_to=self.report_to, bf16=False, fp16=False, use_cpu=self.device == "cpu" or not torch.cuda.is_available(),
            dataloader_num_workers=0, disable_tqdm=False, eval_strategy="no", save_only_model=False,
            gradient_checkpointing=self.gradient_checkpointing,
        )  # fmt: skip

    def peft_config(self):
        if self.lora is None:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                          target_modules=self.lora.target_modules, bias="none")  # fmt: skip


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder of a run (Trainer writes trainer_state.json last)."""
    done = [p for p in Path(output_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def train_dpo(model, tokenizer, train_dataset, options: DpoOptions, output_dir: Path, seed: int,
              eval_dataset=None, callbacks=None) -> tuple[object, dict]:  # fmt: skip
    """Train (resuming from the newest checkpoint in output_dir), then evaluate on eval_dataset.

    Returns the trained model (a PeftModel with LoRA) and the metrics: TRL's training log and its
    final eval metrics (reward accuracy, margins, chosen/rejected log-probs)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    if len(train_dataset) == 0:
        raise ValueError("DPO: the training split has no pairs")
    # Without precomputed log-probs and without LoRA, TRL would rebuild the reference from the
    # model's path through the Auto classes, which know neither in-memory models nor the tiny policy.
    reference = None
    if not options.precompute_ref_log_probs and options.lora is None:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    trainer = MultiStreamDPOTrainer(
        model=model, ref_model=reference, args=options.dpo_config(output_dir, seed), train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=options.peft_config(), callbacks=callbacks,
    )  # fmt: skip
    resume = last_checkpoint(output_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = {"train": {k: _plain(v) for k, v in result.metrics.items()}, "resumed_from": resume.name if resume else None,
               "log": [{k: _plain(v) for k, v in row.items()} for row in trainer.state.log_history]}  # fmt: skip
    if eval_dataset is not None and len(eval_dataset):
        metrics["eval"] = {k: _plain(v) for k, v in trainer.evaluate().items()}
    return trainer.model, metrics


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool, type(None))) else json.loads(json.dumps(value, default=str))
