"""TinyPolicy: the tiny multi-stream model behind TRL's fused-log-prob contract.

TRL's DPOTrainer calls `model(input_ids, attention_mask, labels=..., fused_lm_head=True)` and
reads per-token `.log_probs` of shape [B, L-1], where entry t is log p(input_ids[t+1]) and is 0
wherever labels[t+1] == -100 (its `add_fused_lm_head` patches a single-head causal LM to do so).
The tiny model has four heads over four streams, so it meets the contract itself: it reads each
row back into a conditioning prefix and song streams (the text form of preference_text.py),
scores every stream by its own teacher forcing, and puts each token's log-probability, entropy,
mean logit and top-1 flag at that token's position. The sum over a completion is therefore the
song's log-likelihood under the model, all streams included (`stream_logprobs` summed).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig
from trl.trainer.utils import FusedCausalLMOutput

from pipeline.models.tiny.codec import MAX_WORDS, N_PITCH, VOCAL_NOTE_BASE
from pipeline.models.tiny.model import STREAMS, TinyLeLM
from pipeline.models.tiny.preference_text import PREFIX_FIELDS, PREFIX_LETTERS, STREAM_LETTERS, TokenLayout

EOS_ID = 1


class TinyPolicy(TinyLeLM):
    """A TinyLeLM whose forward speaks token ids (TRL's contract); weights and config unchanged."""

    # DPOTrainer must not patch this forward with a single-head fused LM head (see alignment.dpo).
    computes_fused_log_probs = True
    # The streams whose tokens get log-probabilities; the others count as unscored (0), so DPO
    # compares songs on these streams only (DpoOptions.streams: "preference" or a list).
    scored_streams: tuple[str, ...] = STREAMS
    # What a vocals note's log-probability counts: "note" (word position and pitch, as sampled) or
    # "word" (pitch marginalised out: only the choice the lyric decides; DpoOptions.vocal_factor).
    vocal_factor: str = "note"

    def __init__(self, config):
        super().__init__(config)
        self.layout = TokenLayout.from_config(config)
        # TRL mirrors the pad id into the generation config; the model samples by its own code.
        self.generation_config = GenerationConfig()

    def get_output_embeddings(self):
        return None  # four heads, none of them a single LM head

    def forward(self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=True, use_cache=None,
                num_items_in_batch=None, **unused) -> FusedCausalLMOutput:  # fmt: skip
        if input_ids is None:
            raise ValueError("TinyPolicy.forward needs input_ids (the text form of preference_text.py)")
        rows = [self.read_row(ids) for ids in input_ids]  # padding (id 0) belongs to no stream
        out = self.teacher_forced([r[0] for r in rows], [r[1] for r in rows], training_stage=0)
        shape = (input_ids.shape[0], input_ids.shape[1] - 1)
        fields = {name: torch.zeros(shape, device=input_ids.device) for name in ("log_probs", "entropy", "mean_logits")}
        is_top1 = torch.zeros(shape, dtype=torch.bool, device=input_ids.device)
        for s in (s for s in STREAMS if s in self.scored_streams):
            logits, target = out.logits[s], out.targets[s]
            logp = logits.log_softmax(-1)
            per_token = {
                "log_probs": self._target_log_probs(s, logp, target.clamp(min=0)),
                "entropy": -(logp.exp() * logp).sum(-1).detach(),
                "mean_logits": logits.detach().mean(-1),
            }
            top1 = logits.argmax(-1).eq(target)
            for b, (_, _, where) in enumerate(rows):
                pos = where[s] - 1  # the logit that predicts the token at position p sits at p - 1
                n = len(pos)
                for name, values in per_token.items():
                    fields[name][b, pos] = values[b, :n].to(fields[name].dtype)
                is_top1[b, pos] = top1[b, :n]
        if labels is not None:
            scored = labels[:, 1:].ne(-100)
            fields = {k: v * scored for k, v in fields.items()}
            is_top1 &= scored
        count = num_items_in_batch or max(int((labels[:, 1:] != -100).sum()) if labels is not None else shape[0] * shape[1], 1)
        loss = -fields["log_probs"].sum() / count
        return FusedCausalLMOutput(loss=loss, is_top1=is_top1, **fields)

    def _target_log_probs(self, stream: str, logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(target) per position; a vocals note under vocal_factor "word" as log p(its word)."""
        picked = logp.gather(-1, target[..., None])[..., 0]
        if stream != "vocals" or self.vocal_factor == "note":
            return picked
        words = logp[..., VOCAL_NOTE_BASE:].unflatten(-1, (MAX_WORDS, N_PITCH)).logsumexp(-1)
        is_note = target >= VOCAL_NOTE_BASE
        word = ((target - VOCAL_NOTE_BASE).clamp(min=0) // N_PITCH)
        return torch.where(is_note, words.gather(-1, word[..., None])[..., 0], picked)

    def read_row(self, ids: torch.Tensor) -> tuple[dict, dict, dict]:
        """One row of ids -> (encoded prefix, song streams, positions of each stream's
        tokens in the row; the mixed stream's positions end with its EOS)."""
        offsets, sizes = self.layout.offsets(), self.layout.sizes()
        letter_of = torch.full_like(ids, -1)
        for n, letter in enumerate(offsets):
            inside = (ids >= offsets[letter]) & (ids < offsets[letter] + sizes[letter])
            letter_of[inside] = n
        letters = list(offsets)
        prefix = {}
        for field, letter in zip(PREFIX_FIELDS, PREFIX_LETTERS):
            where = (letter_of == letters.index(letter)).nonzero()[:, 0]
            prefix[field] = ids[where] - offsets[letter]
        if len({len(v) for v in prefix.values()}) != 1:
            raise ValueError("tiny policy input: the prompt's K/P/W/T tokens do not come in fours")
        tokens, where = {}, {}
        for stream, letter in STREAM_LETTERS.items():
            positions = (letter_of == letters.index(letter)).nonzero()[:, 0]
            tokens[stream] = (ids[positions] - offsets[letter]).tolist()
            where[stream] = positions
        eos = (ids == EOS_ID).nonzero()[:, 0]
        if len(eos) != 1:
            raise ValueError(f"tiny policy input: expected one end-of-song token, found {len(eos)}")
        where["mixed"] = torch.cat([where["mixed"], eos])
        return {k: v.cpu() for k, v in prefix.items()}, tokens, where
