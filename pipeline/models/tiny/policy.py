"""TinyPolicy: the tiny multi-stream model behind TRL's fused-log-prob contract.

TRL's DPOTrainer calls `model(input_ids, attention_mask, labels=..., fused_lm_head=True)` and
reads per-token `.log_probs` of shape [B, L-1], where entry t is log p(input_ids[t+1]) and is 0
wherever labels[t+1] == -100 (its `add_fused_lm_head` patches a single-head causal LM to do so).
The tiny model has four heads over four streams, so it meets the contract itself: it reads each
row back into a conditioning prefix and song streams (the text form of preference_text.py),
scores every stream by its own teacher forcing, and puts each token's log-probability, entropy,
mean logit and top-1 flag at that token's position. The heads are scored by TRL's chunked
log-softmax (the kernel behind its fused LM head): only real target positions, projected in
vocabulary tiles, so no [B, n, V] logits are kept for the backward pass. The sum over a completion is therefore the
song's log-likelihood under the model, all streams included (`stream_logprobs` summed).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import FusedCausalLMOutput

from pipeline.models.tiny.codec import MAX_WORDS, N_PITCH, VOCAL_NOTE_BASE
from pipeline.models.tiny.model import STREAMS, TinyLeLM
from pipeline.models.tiny.preference_text import PREFIX_FIELDS, PREFIX_LETTERS, STREAM_LETTERS, TokenLayout

EOS_ID = 1
# Vocabulary columns per projection tile of the chunked log-softmax (TRL's fused LM head uses 32,768).
VOCAB_CHUNK = 32768


class TinyPolicy(TinyLeLM):
    """A TinyLeLM whose forward speaks token ids (TRL's contract); weights and config unchanged."""

    # DPOTrainer must not patch this forward with a single-head fused LM head (see alignment.dpo).
    computes_fused_log_probs = True
    # The streams whose tokens get log-probabilities; the others count as unscored (0), so DPO
    # compares songs on these streams only (DpoOptions.streams: "preference" or a list).
    scored_streams: tuple[str, ...] = STREAMS
    # What a vocals note's log-probability counts: "note" (word position and pitch, as sampled) or
    # "word" (pitch marginalised out: only the choice the lyric decides; DpoOptions.vocal_factor),
    # or "onset" (the word chosen at each note onset only; rests and holds unscored).
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
        # The rows are read on the host: one copy of the ids instead of a wait on the device per lookup.
        rows = [self.read_row(ids) for ids in input_ids.cpu()]  # padding (id 0) belongs to no stream
        scored = tuple(s for s in STREAMS if s in self.scored_streams)
        # Row-major, so row b's tokens come out in order, `len(where[s])` of them.
        states, targets = self.flat_stream_states([r[0] for r in rows], [r[1] for r in rows], stage=0, streams=scored)
        shape = (input_ids.shape[0], input_ids.shape[1] - 1)
        zeros = torch.zeros(shape, device=input_ids.device)
        fields = {name: zeros for name in ("log_probs", "entropy", "mean_logits")}
        is_top1 = torch.zeros(shape, dtype=torch.bool, device=input_ids.device)
        heads = self.stream_heads()
        for s in scored:
            log_probs, entropy, _, mean_logits, top1 = ChunkedLogProbFunction.apply(
                states[s], heads[s].weight, heads[s].bias, targets[s], 1.0, VOCAB_CHUNK, None, 1.0,
                ("entropy", "mean_logits", "is_top1"),
            )  # fmt: skip
            # The logit that predicts the token at position p sits at p - 1.
            at = (torch.cat([torch.full((len(r[2][s]),), b) for b, r in enumerate(rows)]).to(input_ids.device),
                  torch.cat([r[2][s] for r in rows]).to(input_ids.device) - 1)  # fmt: skip
            if s == "vocals" and self.vocal_factor != "note":
                log_probs = self._word_log_probs(states[s], heads[s], targets[s], onsets_only=self.vocal_factor == "onset")
            per_token = {"log_probs": log_probs.float(), "entropy": entropy.detach().float(),
                         "mean_logits": mean_logits.float()}  # fmt: skip
            fields = {name: fields[name].index_put(at, per_token[name]) for name in fields}
            is_top1 = is_top1.index_put(at, top1)
        if labels is not None:
            scored = labels[:, 1:].ne(-100)
            fields = {k: v * scored for k, v in fields.items()}
            is_top1 &= scored
        count = num_items_in_batch or max(int((labels[:, 1:] != -100).sum()) if labels is not None else shape[0] * shape[1], 1)
        loss = -fields["log_probs"].sum() / count
        return FusedCausalLMOutput(loss=loss, is_top1=is_top1, **fields)

    @staticmethod
    def _word_log_probs(states: torch.Tensor, head, target: torch.Tensor, onsets_only: bool = False) -> torch.Tensor:
        """log p(target) per vocals token with a note counted as its word: the log-probability of
        its word position with the pitch summed out (rests and holds as they are, or unscored (0)
        with `onsets_only`: then only the word each note onset chooses counts)."""
        logp = head(states).float().log_softmax(-1)
        picked = logp.gather(-1, target[:, None])[:, 0]
        words = logp[:, VOCAL_NOTE_BASE:].unflatten(-1, (MAX_WORDS, N_PITCH)).logsumexp(-1)
        word = (target - VOCAL_NOTE_BASE).clamp(min=0) // N_PITCH
        other = torch.zeros_like(picked) if onsets_only else picked
        return torch.where(target >= VOCAL_NOTE_BASE, words.gather(-1, word[:, None])[:, 0], other)

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
