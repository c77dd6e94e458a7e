"""Packed rows (`TinyLeLM.pack_rows`): the same log-probabilities and gradients as padded rows.

On a CPU the packed attention runs SDPA row by row (PyTorch's variable-length kernel is CUDA only);
benchmarks/dpo_gpu.py compares the two paths on the GPU as well.
"""

import copy

import pytest
import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from alignment.tiny_policy import TinyPolicy
from pipeline.models.tiny.preference_text import TinySongTokenizer, TokenLayout, completion_text, prompt_text
from pipeline.models.tiny.song_model import CHECKPOINT_DIR

CONDITION = {"lyric": "[verse] the light is low. we walk the road [chorus] sing it out", "genre": "pop",
             "gender": "female", "emotion": "happy", "instruments": ["piano"], "bpm": 100}  # fmt: skip


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def batch(policy):
    """Two pairs of songs of different lengths (so the padded batch has padding), through TRL's collator."""
    songs = [policy.sample_batch(CONDITION, [seed], max_frames=frames)[0] for seed, frames in [(1, 60), (2, 20), (3, 45), (4, 9)]]
    tokenizer = TinySongTokenizer.for_model(policy)
    prompt = tokenizer(prompt_text(CONDITION, TokenLayout.from_config(policy.config), policy.config.max_prefix))["input_ids"]
    examples = [{"prompt_ids": prompt, "chosen_ids": tokenizer(completion_text(songs[i]))["input_ids"],
                 "rejected_ids": tokenizer(completion_text(songs[i + 2]))["input_ids"]} for i in range(2)]  # fmt: skip
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    assert len({len(s["mixed"]) for s in songs}) == 4
    return batch | {"labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)}


def _forward_and_grads(model, batch):
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    (out.log_probs.sum() + out.entropy.sum() * 0).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_packed_rows_give_the_padded_log_probs_and_gradients(policy, batch):
    padded = copy.deepcopy(policy)
    packed = copy.deepcopy(policy)
    packed.pack_rows = True
    out_a, grads_a = _forward_and_grads(padded, batch)
    out_b, grads_b = _forward_and_grads(packed, batch)
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(out_a, field), getattr(out_b, field), atol=1e-4), field
    assert torch.equal(out_a.is_top1, out_b.is_top1)
    assert (out_a.log_probs != 0).sum() > 300  # real tokens of four songs were scored
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 20
    for name, g in grads_a.items():
        scale = g.norm().item()
        assert (g - grads_b[name]).norm().item() <= 1e-4 * max(scale, 1e-3), name


def test_sampling_is_unchanged_with_packing_on(policy):
    packed = copy.deepcopy(policy)
    packed.pack_rows = True
    assert packed.sample_batch(CONDITION, [5, 6], max_frames=12) == policy.sample_batch(CONDITION, [5, 6], max_frames=12)


def test_packed_states_keep_each_row_to_itself(policy, batch):
    """A row's states do not depend on the rows packed beside it."""
    packed = copy.deepcopy(policy)
    packed.pack_rows = True
    rows = [packed.read_row(ids) for ids in batch["input_ids"]]
    conditions, tokens = [r[0] for r in rows], [r[1] for r in rows]
    with torch.no_grad():
        together, _ = packed.packed_stream_states(conditions, tokens)
        alone, _ = packed.packed_stream_states(conditions[1:2], tokens[1:2])
    first = len(tokens[0]["mixed"])
    assert torch.allclose(together["vocals"][first : first + len(tokens[1]["mixed"])], alone["vocals"], atol=1e-5)
