"""DPO with TRL on the tiny multi-stream policy and on a plain causal LM; resuming; LoRA."""

import json

import pytest
import torch
from datasets import Dataset
from trl.trainer.dpo_trainer import DataCollatorForPreference

from alignment.dpo.options import DpoOptions, LoraOptions
from alignment.dpo.trainer import last_checkpoint, train_dpo
from alignment.policy import kl_estimate
from alignment.tiny_policy import TinyPolicy
from pipeline.models.tiny.codec import VOCAL_NOTE_BASE
from pipeline.models.tiny.preference_text import TinySongTokenizer, TokenLayout, completion_text, prompt_text
from pipeline.models.tiny.song_model import CHECKPOINT_DIR

CONDITIONS = [
    {"lyric": "[verse] the light is low. we walk the road [chorus] sing it out", "genre": "pop", "gender": "female",
     "emotion": "happy", "instruments": ["piano"], "bpm": 100, "auto_prompt_audio_type": "Pop"},
    {"lyric": "[verse] cold rain on the hill [chorus] hold on", "genre": "rock", "gender": "male",
     "emotion": "sad", "instruments": ["guitar"], "bpm": 80, "auto_prompt_audio_type": "Rock"},
]  # fmt: skip


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def songs(policy):
    return [policy.sample_batch(c, [1, 2, 3, 4], max_frames=48) for c in CONDITIONS]


@pytest.fixture(scope="module")
def dataset(policy, songs):
    layout = TokenLayout.from_config(policy.config)
    rows = []
    for condition, batch in zip(CONDITIONS, songs):
        prompt = prompt_text(condition, layout, policy.config.max_prefix)
        rows += [{"prompt": prompt, "chosen": completion_text(batch[i]), "rejected": completion_text(batch[i + 2])}
                 for i in range(2)]  # fmt: skip
    return Dataset.from_list(rows)


def test_text_form_reads_back_to_the_same_prefix_and_streams(policy, songs):
    tokenizer = TinySongTokenizer.for_model(policy)
    condition, song = CONDITIONS[0], songs[0][0]
    text = prompt_text(condition, TokenLayout.from_config(policy.config), policy.config.max_prefix)
    ids = torch.tensor(tokenizer(text + completion_text(song))["input_ids"])
    prefix, tokens, _ = policy.read_row(ids)
    expected = policy.encode_condition(condition)
    assert all(torch.equal(prefix[k], expected[k]) for k in expected)
    assert tokens == {k: list(v) for k, v in song.items()}
    with pytest.raises(ValueError, match="not a token"):
        tokenizer("K1 Z9")


def _forward_with(policy, batch, labels, **settings):
    """The policy's forward with some class settings overridden for this call (scored_streams, vocal_factor)."""
    for name, value in settings.items():
        setattr(policy, name, value)
    try:
        with torch.no_grad():
            return policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    finally:
        for name in settings:
            delattr(policy, name)  # back to the class default


def _vocals_positions(policy, batch, pick) -> torch.Tensor:
    """[B, L-1] mask of the log-prob positions of the vocals tokens that `pick` selects (a bool tensor of them)."""
    mask = torch.zeros(batch["input_ids"].shape[0], batch["input_ids"].shape[1] - 1, dtype=torch.bool)
    for b, ids in enumerate(batch["input_ids"]):
        _, tokens, where = policy.read_row(ids)
        mask[b, where["vocals"][pick(torch.tensor(tokens["vocals"]))] - 1] = True
    return mask


def test_trl_log_probs_equal_the_models_teacher_forced_ones(policy, songs, dataset):
    """Through TRL's own collator and label masking: per-token log-probs sum to stream_logprobs."""
    tokenizer = TinySongTokenizer.for_model(policy)
    examples = []
    for row in dataset.select(range(2)):
        ids = {k: tokenizer(row[k])["input_ids"] for k in ("prompt", "chosen", "rejected")}
        examples.append({"prompt_ids": ids["prompt"], "chosen_ids": ids["chosen"], "rejected_ids": ids["rejected"]})
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True)
        chosen = [songs[0][0], songs[0][1]]
        rejected = [songs[0][2], songs[0][3]]
        expected = policy.stream_logprobs([CONDITIONS[0]] * 4, chosen + rejected)
    total = sum(expected.values())
    assert torch.allclose(out.log_probs.sum(1), total, atol=1e-4)
    assert out.log_probs.shape == (4, batch["input_ids"].shape[1] - 1)
    assert (out.log_probs[labels[:, 1:] == -100] == 0).all()  # prompt and padding carry nothing
    # a preference's own streams only (DpoOptions.streams = "preference"): the sum over those streams
    vocal = _forward_with(policy, batch, labels, scored_streams=("mixed", "vocals"))
    assert torch.allclose(vocal.log_probs.sum(1), expected["mixed"] + expected["vocals"], atol=1e-4)
    # vocal_factor "word": a sung note counts as its word (pitch summed out), so each note's
    # log-probability rises to its word's marginal and rests, holds and other streams stay as they were
    words = _forward_with(policy, batch, labels, vocal_factor="word")
    notes = _vocals_positions(policy, batch, lambda vocals: vocals >= VOCAL_NOTE_BASE)
    assert notes.any() and (words.log_probs[notes] > out.log_probs[notes] + 1e-6).all()
    assert torch.allclose(words.log_probs[~notes], out.log_probs[~notes], atol=1e-4)
    assert (words.log_probs <= 1e-6).all()
    # vocal_factor "onset": the same word log-probabilities at note onsets, and the vocals stream's
    # rests and holds unscored (0); the other streams as they were
    onsets = _forward_with(policy, batch, labels, vocal_factor="onset")
    unsung = _vocals_positions(policy, batch, lambda vocals: vocals < VOCAL_NOTE_BASE)
    assert unsung.any() and (onsets.log_probs[unsung] == 0).all() and (out.log_probs[unsung] < 0).any()
    assert torch.allclose(onsets.log_probs[notes], words.log_probs[notes], atol=1e-5)
    others = ~notes & ~unsung
    assert torch.allclose(onsets.log_probs[others], out.log_probs[others], atol=1e-4)


def test_dpo_trains_checkpoints_and_resumes(policy, dataset, tmp_path):
    options = DpoOptions(max_steps=2, batch_size=2, save_steps=1, learning_rate=1e-4)
    model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
    trained, metrics = train_dpo(model, TinySongTokenizer.for_model(model), dataset, options, tmp_path, seed=0,
                                 eval_dataset=dataset)  # fmt: skip
    assert last_checkpoint(tmp_path).name == "checkpoint-2" and metrics["resumed_from"] is None
    assert 0.0 <= metrics["eval"]["eval_rewards/accuracies"] <= 1.0
    losses = [row["loss"] for row in metrics["log"] if "loss" in row]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    moved = any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), policy.state_dict().values()))
    assert moved
    # A longer run in the same folder picks up where the last one stopped (as after a kill).
    model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
    _, metrics = train_dpo(model, TinySongTokenizer.for_model(model), dataset, options.model_copy(update={"max_steps": 3}),
                           tmp_path, seed=0)  # fmt: skip
    assert metrics["resumed_from"] == "checkpoint-2"
    state = json.loads((last_checkpoint(tmp_path) / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and len([r for r in state["log_history"] if "loss" in r]) == 3


def test_packed_rows_train_as_padded_ones(dataset, tmp_path):
    """dpo.pack_rows: the same pairs packed without padding give the padded run's losses and weights."""
    options = DpoOptions(max_steps=2, batch_size=2, save_steps=10, learning_rate=1e-4)
    runs = {}
    for pack in (False, True):
        model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
        trained, metrics = train_dpo(model, TinySongTokenizer.for_model(model), dataset,
                                     options.model_copy(update={"pack_rows": pack}), tmp_path / str(pack), seed=0)  # fmt: skip
        assert trained.pack_rows is pack
        runs[pack] = ([row["loss"] for row in metrics["log"] if "loss" in row], trained.state_dict())
    assert len(runs[True][0]) == 2 and torch.allclose(torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), atol=1e-5)
    assert all(torch.allclose(runs[True][1][k], v, atol=1e-5) for k, v in runs[False][1].items())


def test_pack_rows_needs_a_policy_that_packs(dataset, tmp_path):
    with pytest.raises(ValueError, match="pack_rows needs a policy that packs"):
        train_dpo(torch.nn.Linear(1, 1), None, dataset, DpoOptions(pack_rows=True), tmp_path, seed=0)


def test_lora_run_keeps_the_base_as_reference(dataset, tmp_path):
    model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = DpoOptions(max_steps=1, batch_size=2, lora=LoraOptions(r=4, alpha=8), learning_rate=1e-3)
    trained, _ = train_dpo(model, TinySongTokenizer.for_model(model), dataset, options, tmp_path, seed=0)
    trained.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = trained.get_base_model()
    with trained.disable_adapter():
        unchanged = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(unchanged[k], v) for k, v in before.items())


def test_kl_estimate_is_zero_against_itself_and_positive_after_a_change(policy):
    same = kl_estimate(policy, policy, CONDITIONS, [5, 6], max_frames=32)
    assert same["samples"] == 2 and abs(same["kl"]) < 1e-4
    shifted = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        shifted.vocals_head.bias += torch.linspace(-8, 8, shifted.vocals_head.bias.numel())
    moved = kl_estimate(shifted, policy, CONDITIONS * 2, [5, 6, 7, 8], max_frames=32)
    assert moved["kl"] > 2 * moved["kl_stderr"] > 0


def test_plain_causal_lm_trains_with_the_stock_fused_head(tmp_path):
    """A Hugging Face causal LM (a YuE-style song LM) goes through TRL's own path unchanged."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>"] + [f"t{i}" for i in range(30)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    data = Dataset.from_list([{"prompt": "t1 t2 ", "chosen": "t3 t4", "rejected": "t5 t6 t7"}] * 4)
    _, metrics = train_dpo(model, tokenizer, data, DpoOptions(max_steps=2, batch_size=2), tmp_path, seed=0)
    assert [row["step"] for row in metrics["log"] if "loss" in row] == [1, 2]


def test_reference_forward_each_step_without_precomputed_log_probs(dataset, tmp_path):
    """TRL's other reference mode: a frozen copy scores every batch (the Auto classes cannot rebuild it)."""
    model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
    options = DpoOptions(max_steps=1, batch_size=2, precompute_ref_log_probs=False)
    _, metrics = train_dpo(model, TinySongTokenizer.for_model(model), dataset, options, tmp_path, seed=0)
    first = next(row for row in metrics["log"] if "loss" in row)
    assert abs(first["loss"] - 0.6931) < 1e-3  # policy == reference at step 1: loss is log 2


def test_auto_precomputes_the_reference_only_where_the_steps_cover_every_pair(dataset, tmp_path):
    """A short run on many pairs scores the reference batch by batch; either way it trains alike."""
    options = DpoOptions(max_steps=2, batch_size=2, learning_rate=1e-4)
    assert options.precompute_ref_log_probs == "auto" and options.precomputes(4) and not options.precomputes(5)
    assert DpoOptions(epochs=0.5).precomputes(10**6)  # max_steps -1: an epoch's share, every pair scored once
    assert options.model_copy(update={"precompute_ref_log_probs": True}).precomputes(10**6)
    losses = {}
    for mode in (True, False):
        model = TinyPolicy.from_pretrained(CHECKPOINT_DIR, torch_dtype=torch.float32)
        run = options.model_copy(update={"precompute_ref_log_probs": mode})
        _, metrics = train_dpo(model, TinySongTokenizer.for_model(model), dataset, run, tmp_path / str(mode), seed=0)
        losses[mode] = [row["loss"] for row in metrics["log"] if "loss" in row]
    assert len(losses[True]) == 2 and losses[True] == pytest.approx(losses[False], abs=1e-4)
