"""TinyLeLM: a miniature of LeVo's LeLM (a decoder-only LM plus a shallower AR decoder).

- LM (Llama blocks, causal) over [conditioning prefix ; 3 header tokens ; mixed stream]:
  predicts the header, then the mixed token of each frame, then EOS (an extra mixed id,
  `config.mixed_eos`, not in the codec). Its hidden state at mixed token t is h_t.
- AR decoder (fewer Llama blocks, causal over frames) predicts the dual-track tokens (vocals,
  accompaniment) of frame t with two heads. Its input at frame t is
  cond_proj(h_{t+k}) + emb(vocals[t-1]) + emb(accompaniment[t-1]) (a learned BOS at t=0), so
  frame t sees the LM states up to frame t+k (`config.delay`); past the song's end the LM
  state is a learned `end_pad` vector.
- Progressive training: stage 1 trains the LM (header + mixed losses), stage 2 trains the
  AR decoder with the LM frozen (dual-track losses), stage 0 everything.
Every batch entry is its own right-padded sequence, so prefixes and songs may differ in length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import LlamaConfig, LlamaModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from pipeline.models.tiny.codec import ACCOMPANIMENT_SIZE, HEADER_SIZE, MAX_WORDS, MIXED_SIZE, VOCAL_SIZE
from pipeline.models.tiny.conditioning import N_KINDS, encode_condition, tag_vocab_size

STREAMS = ("header", "mixed", "vocals", "accompaniment")
HEADER_KIND, MIXED_KIND = N_KINDS, N_KINDS + 1  # segment ids of the LM's non-prefix tokens
HEADER_LEN = 3
LM_PREFIXES = ("kind_emb", "position_emb", "word_emb", "tag_emb", "header_emb", "mixed_emb", "lm.", "header_head",
               "mixed_head")  # fmt: skip


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution a draw samples from: softmax at `temperature` over the `top_k` tokens and the
    smallest prefix reaching `top_p`; temperature 0 puts all mass on the argmax (greedy)."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keeps the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("sampling: the probability tensor contains inf or nan")
    return probs


class TinyLeLMConfig(PretrainedConfig):
    model_type = "tiny_lelm"

    def __init__(self, hidden_size=128, lm_layers=3, decoder_layers=1, num_heads=4, intermediate_size=256,
                 header_vocab=HEADER_SIZE, mixed_vocab=MIXED_SIZE, vocals_vocab=VOCAL_SIZE,
                 accompaniment_vocab=ACCOMPANIMENT_SIZE, delay=2, max_prefix=640, max_frames=1024,
                 tag_buckets=512, word_buckets=4096, initializer_range=0.02, **kwargs):  # fmt: skip
        self.hidden_size, self.lm_layers, self.decoder_layers = hidden_size, lm_layers, decoder_layers
        self.num_heads, self.intermediate_size = num_heads, intermediate_size
        self.header_vocab, self.mixed_vocab = header_vocab, mixed_vocab
        self.vocals_vocab, self.accompaniment_vocab = vocals_vocab, accompaniment_vocab
        self.delay, self.max_prefix, self.max_frames = delay, max_prefix, max_frames
        self.tag_buckets, self.word_buckets, self.initializer_range = tag_buckets, word_buckets, initializer_range
        super().__init__(**kwargs)

    @property
    def mixed_eos(self) -> int:
        return self.mixed_vocab

    def llama(self, layers: int) -> LlamaConfig:
        return LlamaConfig(vocab_size=1, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                           num_hidden_layers=layers, num_attention_heads=self.num_heads,
                           num_key_value_heads=self.num_heads, attention_dropout=0.0,
                           max_position_embeddings=self.max_prefix + HEADER_LEN + self.max_frames + 1,
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip


@dataclass
class TinyLeLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    losses: dict | None = None  # stream -> mean cross-entropy
    logits: dict | None = None  # stream -> [B, n, V]; mixed has T+1 positions (the last one is EOS)
    targets: dict | None = None  # stream -> [B, n], -100 at padding


class TinyLeLM(PreTrainedModel):
    config_class = TinyLeLMConfig
    base_model_prefix = "lelm"
    _no_split_modules: list[str] = []

    def __init__(self, config: TinyLeLMConfig):
        super().__init__(config)
        d = config.hidden_size
        self.kind_emb = nn.Embedding(N_KINDS + 2, d)
        self.position_emb = nn.Embedding(MAX_WORDS + 1, d)  # the copy vocabulary: lyric word positions
        self.word_emb = nn.Embedding(config.word_buckets, d)
        self.tag_emb = nn.Embedding(tag_vocab_size(config.tag_buckets), d)
        self.header_emb = nn.Embedding(config.header_vocab, d)
        self.mixed_emb = nn.Embedding(config.mixed_vocab + 1, d)
        self.lm = LlamaModel(config.llama(config.lm_layers))
        self.header_head = nn.Linear(d, config.header_vocab)
        self.mixed_head = nn.Linear(d, config.mixed_vocab + 1)
        self.cond_proj = nn.Linear(d, d)
        self.end_pad = nn.Parameter(torch.zeros(d))
        self.dual_bos = nn.Parameter(torch.zeros(d))
        self.vocals_emb = nn.Embedding(config.vocals_vocab, d)
        self.accompaniment_emb = nn.Embedding(config.accompaniment_vocab, d)
        self.decoder = LlamaModel(config.llama(config.decoder_layers))
        self.vocals_head = nn.Linear(d, config.vocals_vocab)
        self.accompaniment_head = nn.Linear(d, config.accompaniment_vocab)
        self.training_stage = 0
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            nn.init.normal_(self.end_pad, std=self.config.initializer_range)
            nn.init.normal_(self.dual_bos, std=self.config.initializer_range)

    # ---- progressive training -------------------------------------------------------------
    def is_lm_param(self, name: str) -> bool:
        return name.startswith(LM_PREFIXES)

    def set_training_stage(self, stage: int) -> "TinyLeLM":
        """0: train everything; 1: the LM only (header + mixed); 2: the AR decoder, LM frozen."""
        self.training_stage = stage
        for name, p in self.named_parameters():
            p.requires_grad_(stage == 0 or (stage == 1) == self.is_lm_param(name))
        return self

    # ---- conditioning ---------------------------------------------------------------------
    def encode_condition(self, condition: dict) -> dict[str, torch.Tensor]:
        """The prefix ids of a condition dict; an already encoded prefix (its four id tensors, as
        read back from text by TinyPolicy) passes through."""
        if isinstance(condition.get("kind"), torch.Tensor):
            return condition
        c = self.config
        return encode_condition(condition, c.tag_buckets, c.word_buckets, c.max_prefix)

    def prefix_embeds(self, condition: dict) -> torch.Tensor:
        enc = {k: v.to(self.device) for k, v in self.encode_condition(condition).items()}
        return (self.kind_emb(enc["kind"]) + self.position_emb(enc["position"]) + self.word_emb(enc["word"])
                + self.tag_emb(enc["tag"]))  # fmt: skip

    # ---- teacher forcing ------------------------------------------------------------------
    def lm_input(self, condition: dict, tokens: dict) -> tuple[torch.Tensor, int]:
        """The LM's input embeddings [prefix ; header ; mixed] for one song, and the prefix length."""
        prefix = self.prefix_embeds(condition)
        header = torch.as_tensor(tokens["header"], dtype=torch.long, device=self.device)
        mixed = torch.as_tensor(tokens["mixed"], dtype=torch.long, device=self.device)
        seq = torch.cat([prefix, self.header_emb(header) + self.kind_emb.weight[HEADER_KIND],
                         self.mixed_emb(mixed) + self.kind_emb.weight[MIXED_KIND]])  # fmt: skip
        return seq, len(prefix)

    def forward(self, conditions: list[dict], tokens: list[dict], training_stage: int | None = None) -> TinyLeLMOutput:
        return self.teacher_forced(conditions, tokens, training_stage)

    def teacher_forced(self, conditions: list[dict], tokens: list[dict], training_stage: int | None = None) -> TinyLeLMOutput:
        """Logits of every stream by teacher forcing; `tokens` are the labels. The loss is the
        sum of the stage's per-stream mean cross-entropies (stage 1: header + mixed; 2: vocals
        + accompaniment; 0: all four)."""
        stage = self.training_stage if training_stage is None else training_stage
        states, targets = self.stream_states(conditions, tokens, stage)
        heads = self.stream_heads()
        logits = {s: heads[s](states[s]) for s in STREAMS}
        losses = {s: F.cross_entropy(logits[s].flatten(0, 1), targets[s].flatten(), ignore_index=-100) for s in STREAMS}
        used = {1: ("header", "mixed"), 2: ("vocals", "accompaniment")}.get(stage, STREAMS)
        return TinyLeLMOutput(loss=sum(losses[s] for s in used), losses=losses, logits=logits, targets=targets)

    def stream_heads(self) -> dict[str, nn.Linear]:
        return {"header": self.header_head, "mixed": self.mixed_head, "vocals": self.vocals_head,
                "accompaniment": self.accompaniment_head}  # fmt: skip

    def stream_states(self, conditions: list[dict], tokens: list[dict], stage: int = 0) -> tuple[dict, dict]:
        """The hidden state each stream's head reads at every target position ([B, n, d]) and the
        targets ([B, n], -100 at padding): the logits are `stream_heads()[s](states[s])`. Kept
        apart so a caller can score the heads in vocabulary chunks without materialising logits."""
        dev, c, k = self.device, self.config, self.config.delay
        seqs, targets = [], {s: [] for s in STREAMS}
        prefix_lens, lengths = [], []
        for cond, tok in zip(conditions, tokens):
            seq, prefix_len = self.lm_input(cond, tok)
            seqs.append(seq)
            prefix_lens.append(prefix_len)
            header = torch.as_tensor(tok["header"], dtype=torch.long, device=dev)
            mixed = torch.as_tensor(tok["mixed"], dtype=torch.long, device=dev)
            lengths.append(len(mixed))
            targets["header"].append(header)
            targets["mixed"].append(torch.cat([mixed, mixed.new_tensor([c.mixed_eos])]))
            for s in ("vocals", "accompaniment"):
                targets[s].append(torch.as_tensor(tok[s], dtype=torch.long, device=dev))
        targets = {s: pad_sequence(v, batch_first=True, padding_value=-100) for s, v in targets.items()}
        plen, n = torch.tensor(prefix_lens, device=dev), torch.tensor(lengths, device=dev)
        tmax = int(n.max()) if len(lengths) else 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and stage != 2):
            # Right padding and a causal mask: no real token ever attends to a pad.
            hidden = self.lm(inputs_embeds=pad_sequence(seqs, batch_first=True)).last_hidden_state
        last, d = hidden.shape[1] - 1, hidden.shape[2]

        def gather(offsets: torch.Tensor) -> torch.Tensor:
            idx = (plen[:, None] + offsets[None]).clamp(max=last)
            return hidden.gather(1, idx[..., None].expand(-1, -1, d))

        ar = torch.arange(tmax + k + 1, device=dev)
        states = {"header": gather(ar[:HEADER_LEN] - 1), "mixed": gather(ar[: tmax + 1] + HEADER_LEN - 1)}
        frames = gather(ar[k : k + tmax] + HEADER_LEN)  # h_{t+k} for decoder frame t
        inside = (ar[k : k + tmax][None] < n[:, None])[..., None]
        cond = torch.where(inside, self.cond_proj(frames), self.end_pad)
        dual = self.dual_track_states(cond, targets["vocals"].clamp(min=0), targets["accompaniment"].clamp(min=0))
        return states | {"vocals": dual, "accompaniment": dual}, targets

    # ---- packed rows (no padding) --------------------------------------------------------------
    @property
    def pack_rows(self) -> bool:
        """Whether `flat_stream_states` packs a batch's rows into one sequence instead of padding them
        (pipeline.models.tiny.packing): the same function, without the padding's work."""
        return getattr(self, "_pack_rows", False)

    @pack_rows.setter
    def pack_rows(self, value: bool) -> None:
        if value:
            from pipeline.models.tiny.packing import use_packed_attention

            use_packed_attention(self.lm)
            use_packed_attention(self.decoder)
        self._pack_rows = bool(value)

    def flat_stream_states(self, conditions: list[dict], tokens: list[dict], stage: int = 0,
                           streams: tuple[str, ...] = STREAMS) -> tuple[dict, dict]:  # fmt: skip
        """Per stream, the states at its real target positions [N_s, d] and those targets [N_s], rows one
        after another: `stream_states` with the padding dropped, packed or padded as `pack_rows` says."""
        if self.pack_rows:
            states, targets = self.packed_stream_states(conditions, tokens, stage)
            return {s: states[s] for s in streams}, {s: targets[s] for s in streams}
        states, targets = self.stream_states(conditions, tokens, stage)
        valid = {s: targets[s] >= 0 for s in streams}
        return {s: states[s][valid[s]] for s in streams}, {s: targets[s][valid[s]] for s in streams}

    def packed_stream_states(self, conditions: list[dict], tokens: list[dict], stage: int = 0) -> tuple[dict, dict]:
        """`flat_stream_states` with the rows packed: each block stack runs once over the rows laid end
        to end ([1, N, d]), attention causal inside each row. The index arithmetic is done on the host
        and sent with the ids in one copy, so the forward waits on the device only where it must."""
        from pipeline.models.tiny.packing import PackedRows, run_stack

        dev, c, k = self.device, self.config, self.config.delay
        enc = [self.encode_condition(cond) for cond in conditions]
        p = [len(e["kind"]) for e in enc]
        t = [len(tok["mixed"]) for tok in tokens]
        n = [a + HEADER_LEN + b for a, b in zip(p, t)]
        rows, total_p = len(t), sum(p)
        ar = torch.arange
        perm, lm_pos, header_at, mixed_at, frame_at, inside, dec_pos, prev_at, first = ([] for _ in range(9))
        start = prefix_off = frame_off = 0
        for b in range(rows):
            pb, tb, f = p[b], t[b], ar(t[b])
            perm += [ar(prefix_off, prefix_off + pb), total_p + HEADER_LEN * b + ar(HEADER_LEN),
                     total_p + HEADER_LEN * rows + frame_off + f]  # fmt: skip
            lm_pos.append(ar(n[b]))
            header_at.append(start + pb - 1 + ar(HEADER_LEN))  # the state before header token j predicts it
            mixed_at.append(start + pb + HEADER_LEN - 1 + ar(tb + 1))  # mixed tokens, then EOS
            live = f + k < tb  # decoder frame f reads h_{f+k}; past the song's end, end_pad
            frame_at.append(torch.where(live, start + pb + HEADER_LEN + f + k, start))
            inside.append(live.long())
            dec_pos.append(f)
            prev_at.append((frame_off + f - 1).clamp(min=frame_off))
            first.append((f == 0).long())
            start, prefix_off, frame_off = start + n[b], prefix_off + pb, frame_off + tb
        as_long = lambda x: torch.as_tensor(x, dtype=torch.long)  # noqa: E731
        mixed_targets = [torch.cat([as_long(tok["mixed"]), as_long([c.mixed_eos])]) for tok in tokens]
        parts = [torch.cat([as_long(e[field]) for e in enc]) for field in ("kind", "position", "word", "tag")]
        parts += [torch.cat([as_long(tok[s]) for tok in tokens]) for s in ("header", "mixed", "vocals", "accompaniment")]
        parts += [torch.cat(x) for x in (mixed_targets, perm, lm_pos, header_at, mixed_at, frame_at, inside, dec_pos,
                                          prev_at, first)]  # fmt: skip
        host = torch.cat(parts)
        if dev.type == "cuda":
            host = host.pin_memory()
        (kind, position, word, tag, header, mixed, vocals, accompaniment, mixed_targets, perm, lm_pos, header_at, mixed_at,
         frame_at, inside, dec_pos, prev_at, first) = host.to(dev, non_blocking=True).split([len(x) for x in parts])  # fmt: skip
        bound = self.lm.config.max_position_embeddings
        with torch.set_grad_enabled(torch.is_grad_enabled() and stage != 2):
            embeds = torch.cat([
                self.kind_emb(kind) + self.position_emb(position) + self.word_emb(word) + self.tag_emb(tag),
                self.header_emb(header) + self.kind_emb.weight[HEADER_KIND],
                self.mixed_emb(mixed) + self.kind_emb.weight[MIXED_KIND],
            ])  # fmt: skip
            hidden = run_stack(self.lm, embeds.index_select(0, perm)[None], lm_pos[None],
                               PackedRows.of(n, dev, max(bound, max(n, default=0))))[0]  # fmt: skip
        states = {"header": hidden.index_select(0, header_at), "mixed": hidden.index_select(0, mixed_at)}
        cond = torch.where(inside.bool()[:, None], self.cond_proj(hidden.index_select(0, frame_at)), self.end_pad)
        prev = (self.vocals_emb(vocals) + self.accompaniment_emb(accompaniment)).index_select(0, prev_at)
        prev = torch.where(first.bool()[:, None], self.dual_bos, prev)
        dual = run_stack(self.decoder, (cond + prev)[None], dec_pos[None],
                         PackedRows.of(t, dev, max(bound, max(t, default=0))))[0]  # fmt: skip
        targets = {"header": header, "mixed": mixed_targets, "vocals": vocals, "accompaniment": accompaniment}
        return states | {"vocals": dual, "accompaniment": dual}, targets

    def dual_track_states(self, cond: torch.Tensor, vocals: torch.Tensor, accompaniment: torch.Tensor) -> torch.Tensor:
        """The AR decoder by teacher forcing: cond [B, T, d] (delayed LM states), previous tokens shifted in;
        both dual-track heads read its output."""
        prev = self.vocals_emb(vocals[:, :-1]) + self.accompaniment_emb(accompaniment[:, :-1])
        prev = torch.cat([self.dual_bos.expand(len(cond), 1, -1), prev], dim=1)
        return self.decoder(inputs_embeds=cond + prev).last_hidden_state

    def dual_track_logits(self, cond: torch.Tensor, vocals: torch.Tensor, accompaniment: torch.Tensor) -> dict:
        out = self.dual_track_states(cond, vocals, accompaniment)
        return {"vocals": self.vocals_head(out), "accompaniment": self.accompaniment_head(out)}

    def stream_logprobs(self, conditions: list[dict], tokens: list[dict], per_token: bool = False) -> dict:
        """Log-probability of each song under its condition, per stream: [B] sums, or with
        per_token [B, n] tensors (0 at padding). "mixed" includes the final EOS token."""
        out = self.teacher_forced(conditions, tokens)
        result = {}
        for s in STREAMS:
            target = out.targets[s]
            lp = out.logits[s].log_softmax(-1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
            lp = lp.masked_fill(target < 0, 0.0)
            result[s] = lp if per_token else lp.sum(1)
        return result

    # ---- sampling -------------------------------------------------------------------------
    @staticmethod
    def _draw(logits, gens, temperature, top_k, top_p, active=None) -> torch.Tensor:
        """One token per row; rows not `active` get 0 without touching their generator, so a
        candidate's draws do not depend on when the other candidates of its batch end."""
        if temperature <= 0:
            return logits.argmax(-1)
        probs = sampling_probs(logits, temperature, top_k, top_p).cpu()
        # torch.multinomial's draw of one sample, row by row from each row's generator (argmax of
        # p / q with q ~ Exp(1)), with the division and argmax done once for the batch: the same tokens.
        q = torch.ones_like(probs)
        active = [True] * len(gens) if active is None else active.tolist()
        for i, (g, on) in enumerate(zip(gens, active)):
            if on:
                q[i].exponential_(1, generator=g)
        picks = (probs / q).argmax(-1).masked_fill(~torch.tensor(active, dtype=torch.bool), 0)
        return picks.to(logits.device)

    def sample_batch(self, condition: dict, seeds: list[int], temperature: float = 1.0, top_k: int = 0,
                     top_p: float = 1.0, max_frames: int | None = None) -> list[dict[str, list[int]]]:  # fmt: skip
        """One song per seed for one condition, each from its own seeded torch.Generator
        (pipeline.models.tiny.sampling.sample_songs, which also batches several conditions)."""
        from pipeline.models.tiny.sampling import sample_songs

        return sample_songs(self, [condition] * len(seeds), seeds, temperature, top_k, top_p, max_frames)

    def sample(self, condition: dict, seed: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               max_frames: int | None = None) -> dict[str, list[int]]:  # fmt: skip
        return self.sample_batch(condition, [seed], temperature, top_k, top_p, max_frames)[0]
