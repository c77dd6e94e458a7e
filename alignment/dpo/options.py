"""What DPO trains: one run's options (`DpoOptions`, mapped onto TRL's DPOConfig and PEFT's
LoraConfig) and the dpo stage's section of the round config (`DpoStageOptions`).

Importable without torch or TRL, so a config is checked whole before any work starts. Options
of a run come from, in order: `defaults`, the preference's own `dpo_defaults` (its module),
then `per_strategy.<name>`; every key of an override is checked like the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_serializer, model_validator

from pipeline.preferences import JOINT, preferences, strategy_names
from pipeline.preferences.base import POLICY_STREAMS

POLICY_STREAM = Literal[POLICY_STREAMS]  # one stream's name


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
    loss_weights: list[float] | None = Field(
        None, description="DPOConfig.loss_weights: one weight per `loss_type` (e.g. [1.0, 1.0] for "
        "['sigmoid', 'sft'], RPO: DPO plus the chosen song's NLL); null: equal weights."
    )
    learning_rate: float = Field(5e-5, gt=0, description="DPOConfig.learning_rate.")
    epochs: float = Field(1.0, gt=0, description="DPOConfig.num_train_epochs.")
    max_steps: int = Field(-1, description="DPOConfig.max_steps; -1: as many as `epochs` give.")
    batch_size: int = Field(4, ge=1, description="Pairs per micro-batch over all processes: each of the stage's `processes` "
                            "takes batch_size / processes (DPOConfig.per_device_train_batch_size), so a step sees the "
                            "same pairs on any process count.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="DPOConfig.gradient_accumulation_steps.")
    warmup_steps: int = Field(0, ge=0, description="DPOConfig.warmup_steps.")
    lora: LoraOptions | None = Field(None, description="Train a LoRA adapter instead of every weight; null: full fine-tuning.")
    precompute_ref_log_probs: bool | Literal["auto"] = Field(
        "auto", description="DPOConfig.precompute_ref_log_probs: score every pair with the reference once, before "
        "training (true), or each batch as it trains (false); auto: precompute only when the run sees every pair "
        "(a 40-step run on 1,600 pairs would otherwise score 1,440 pairs it never trains on)."
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
    streams: Literal["all", "preference"] | list[POLICY_STREAM] = Field(
        "all", description="Which token streams of a multi-stream policy DPO's log-probabilities sum over: all (the "
        "paper's setting), only the streams the preference declares (its `streams`; joint: all), or these streams "
        f"(a list of {', '.join(POLICY_STREAMS)})."
    )
    vocal_factor: Literal["note", "word", "onset"] = Field(
        "note", description="What a sung note's log-probability counts in a multi-stream policy: the whole note "
        "(word and pitch, the paper's setting), its word only (pitch marginalised: what the lyric decides), or "
        "onset: the word chosen at each note onset only, with rests and holds unscored."
    )
    pack_rows: bool = Field(
        False, description="Pack a micro-batch's songs end to end into one sequence, without padding (a multi-stream "
        "policy: the tiny model's); the same log-probabilities and gradients, less work where song lengths differ."
    )
    replicates: int = Field(
        1, ge=1, le=64, description="Independent runs on the same pairs, each with its own seed (its own order of "
        "pairs); the strategy's model is the average of their weights and each run's own is kept in "
        "dpo/<strategy>/replicates/ (alignment.dpo.replicates). Full fine-tuning only."
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's default.")
    device: Literal["auto", "cpu"] = Field("auto", description="'cpu' forces the CPU even where a GPU is present.")

    @model_validator(mode="after")
    def _replicates_average_whole_weights(self):
        if self.replicates > 1 and self.lora is not None:
            raise ValueError(f"replicates {self.replicates} with lora: replicate runs are averaged weight by weight, and "
                             "averaging LoRA's A and B factors does not average the adapters' updates; use lora: null")  # fmt: skip
        return self

    def per_process(self, processes: int) -> tuple[int, int]:
        """(pairs per process and micro-batch, micro-batches per step) on `processes` processes: the
        pairs of an optimizer step, batch_size x gradient_accumulation_steps, are the same on any count."""
        if self.batch_size % processes == 0:
            return self.batch_size // processes, self.gradient_accumulation_steps
        if self.gradient_accumulation_steps % processes == 0:
            return self.batch_size, self.gradient_accumulation_steps // processes
        raise ValueError(f"dpo: batch_size {self.batch_size} x gradient_accumulation_steps {self.gradient_accumulation_steps} "
                         f"pairs per step cannot be split evenly over {processes} processes; make batch_size or "
                         f"gradient_accumulation_steps a multiple of {processes}")  # fmt: skip

    def precomputes(self, pairs: int | None) -> bool:
        """Whether the reference scores all `pairs` before training: as set, else (auto) when the run's
        steps cover them, so no pair is scored that is never trained on (unknown pairs: precompute)."""
        if self.precompute_ref_log_probs != "auto":
            return self.precompute_ref_log_probs
        seen = self.max_steps * self.batch_size * self.gradient_accumulation_steps
        return pairs is None or self.max_steps < 0 or seen >= pairs

    def dpo_config(self, output_dir: Path, seed: int, processes: int = 1, sharding: str = "ddp",
                   wrap_layers: list[str] | None = None, pairs: int | None = None):  # fmt: skip
        """TRL's DPOConfig for this run on `processes` processes (launched by torch.distributed.run);
        `wrap_layers`: the block classes FSDP shards one by one (null: the model's `_no_split_modules`);
        `pairs`: the training pairs, which decide `precompute_ref_log_probs: auto` (unknown: precompute)."""
        import torch
        from trl import DPOConfig

        batch, accumulate = self.per_process(processes)
        cpu = self.device == "cpu" or not torch.cuda.is_available()
        parallel = {}
        if processes > 1:
            parallel["ddp_backend"] = "gloo" if cpu else "nccl"
        if processes > 1 and sharding == "fsdp":
            # Saved whole (FULL_STATE_DICT), so a checkpoint resumes on another process count.
            fsdp = {"state_dict_type": "FULL_STATE_DICT", "use_orig_params": True, "sync_module_states": True}
            if wrap_layers:
                fsdp["transformer_layer_cls_to_wrap"] = wrap_layers
            parallel |= {"fsdp": "full_shard auto_wrap", "fsdp_config": fsdp}
        return DPOConfig(
            output_dir=str(output_dir), seed=seed, data_seed=seed, beta=self.beta, loss_type=self.loss_type,
            loss_weights=self.loss_weights,
            learning_rate=self.learning_rate, num_train_epochs=self.epochs, max_steps=self.max_steps,
            per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
            gradient_accumulation_steps=accumulate, warmup_steps=self.warmup_steps,
            precompute_ref_log_probs=self.precomputes(pairs), max_length=self.max_length,
            save_strategy="steps", save_steps=self.save_steps, save_total_limit=2, logging_steps=self.logging_steps,
            report_to=self.report_to, bf16=False, fp16=False, use_cpu=cpu,
            dataloader_num_workers=0, disable_tqdm=False, eval_strategy="no", save_only_model=False,
            gradient_checkpointing=self.gradient_checkpointing, **parallel,
        )  # fmt: skip

    def peft_config(self):
        if self.lora is None:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                          target_modules=self.lora.target_modules, bias="none")  # fmt: skip


def _optional_fields(model: type[BaseModel]) -> dict:
    return {name: (Optional[f.annotation], Field(None, description=f.description)) for name, f in model.model_fields.items()}


class _Override(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _only_what_is_set(self, handler):
        """Only the keys a person set: an override of `null` stays distinct from no override."""
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


# The same keys as DpoOptions, each optional: what a strategy changes from the defaults.
DpoOverrides = create_model("DpoOverrides", __base__=_Override, **_optional_fields(DpoOptions))


class DpoStageOptions(BaseModel):
    """DPO stage: which strategies to train, the policy, run defaults and per-strategy overrides."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[str] | None = Field(
        None, description="Strategies to train, by name (every preference, and joint); null: all of them."
    )
    policy: str | None = Field(None, description="A Hugging Face causal LM folder to align; null: the round's tiny model.",
                               json_schema_extra={"needs": "path"})
    defaults: DpoOptions = Field(default_factory=DpoOptions, description="Run options every strategy starts from.")
    per_strategy: dict[str, DpoOverrides] = Field(
        default_factory=dict, description="Per-strategy overrides of `defaults`, keyed by strategy name."
    )
    kl_samples: int = Field(8, ge=0, description="Songs sampled on held-out prompts for the KL estimate (tiny policy).")
    processes: int = Field(1, ge=1, le=1024, description="Processes each run trains on, one per GPU (torch.distributed "
                           "through accelerate; gloo on CPU). The pairs per step stay batch_size x "
                           "gradient_accumulation_steps on any count, so a run resumes on another count "
                           "(`songpref dpo --gpus N` sets it).")  # fmt: skip
    sharding: Literal["ddp", "fsdp"] = Field(
        "ddp", description="With processes > 1: ddp (each GPU holds the whole policy and its optimizer: LoRA, or a "
        "policy that fits one GPU) or fsdp (parameters, gradients and optimizer states sharded over the GPUs: full "
        "fine-tuning of a large policy). Checkpoints are written whole either way."
    )
    # How a run is spread, not what it trains: left out of the config hash and of the runs' keys.
    UNHASHED_FIELDS: ClassVar[tuple[str, ...]] = ("processes", "sharding")

    @field_validator("strategies", "per_strategy")
    @classmethod
    def _known_strategies(cls, value):
        known = strategy_names()
        unknown = sorted(set(value or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r}; strategies are: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _overrides_resolve(self):
        """Each strategy's options checked whole when the config is read, not when its run starts."""
        for strategy in self.per_strategy:
            try:
                self.for_strategy(strategy)
            except ValidationError as error:
                raise ValueError(f"per_strategy.{strategy}: {error.errors()[0]['msg']}") from None
        return self

    def trains(self, strategy: str) -> bool:
        return self.strategies is None or strategy in self.strategies

    def for_strategy(self, strategy: str) -> DpoOptions:
        """defaults, then the preference's own DPO defaults, then this config's override (set keys only)."""
        own = {} if strategy == JOINT else preferences()[strategy].dpo_defaults
        override = self.per_strategy.get(strategy)
        changes = override.model_dump(exclude_unset=True) if override is not None else {}
        return DpoOptions.model_validate({**self.defaults.model_dump(), **own, **changes})
