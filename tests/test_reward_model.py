"""The musicality reward model end to end on rendered songs and a simulated crowd.

Songs: 16 prompts x 5 candidates, composed by the tiny model's composer (a sound song per prompt)
and damaged to graded degrees (chords a semitone off, onsets pushed off the beat, stretches of
silence, wrong sung pitches), then rendered to stems. The damage is what the simulated crowd's
hidden utility reads from the scores; the reward model only hears the audio. Sung pitch is
nearly inaudible in these renders (flite speaks each phrase at one mean pitch), so the crowd
knows more than the audio holds, and the model should stay below the crowd's own ceiling.
"""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.models.tiny.composer import compose
from pipeline.models.tiny.renderer import render, write_stems
from pipeline.models.tiny.score import STEPS_PER_BEAT, Score
from pipeline.scoring.base import ScoringItem
from reward_model.bradley_terry import RewardModel, RewardModelConfig, RewardTrainer, bradley_terry_loss
from reward_model.crowd import CrowdConfig, SimulatedCrowd, decode_candidate, utility_components
from reward_model.embeddings import FEATURE_DIM, FEATURE_NAMES, EmbeddingConfig, FeatureEmbedder, embedding_matrix, load_embedder
from reward_model.quality import assess, drop_flagged
from reward_model.rankings import agreement_ceiling, break_ranking, drop_failed_gold, gold_accuracy, rankings_to_pairs
from reward_model.scorer import RewardScorer

if importlib.util.find_spec("muq") is not None:
    from test_mulan import mulan_dir  # noqa: F401  (the tiny random MuQ-MuLan fixture)

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")

BAR = 4 * STEPS_PER_BEAT
LINES = ("the morning light is on my face", "we keep on walking through the rain", "hold on to me tonight",
         "we are alive and free", "the city sleeps below the stars", "i hear your voice again",
         "dancing in the summer heat", "never let the fire die")  # fmt: skip
CROWD = CrowdConfig(seed=0, annotators=15, annotators_per_task=5, tasks_per_prompt=4)
TRAIN = RewardModelConfig(seed=0, test_fraction=0.3)


def condition(i: int) -> dict:
    r = random.Random(i)
    verse, chorus = ". ".join(r.sample(LINES, 2)), ". ".join(r.sample(LINES, 2))
    return {"lyric": f"[intro-short] ; [verse] {verse} ; [chorus] {chorus} ; [outro-short]",
            "gender": r.choice(["female", "male"]), "genre": "Pop", "emotion": r.choice(["happy", "sad"]),
            "instruments": ["piano", "drums"], "bpm": r.choice([90, 100, 110, 120])}  # fmt: skip


def damage(score: Score, rng: random.Random) -> Score:
    """Independent severities per kind of damage, so candidates differ along several axes."""
    s_key, s_grid, s_silence, s_pitch = (rng.random() ** 1.5 for _ in range(4))
    off = {c.start for c in score.chords if rng.random() < 0.5 * s_key}
    chords = [replace(c, root=(c.root + 1) % 12) if c.start in off else c for c in score.chords]
    bass = [replace(n, pitch=n.pitch + 1) if any(c.start in off and c.start <= n.start < c.start + c.duration
                                                 for c in score.chords) else n for n in score.bass]  # fmt: skip

    def nudge(x):
        late = x.duration > 1 and rng.random() < 0.7 * s_grid
        return replace(x, start=x.start + 1, duration=x.duration - 1) if late else x

    chords, bass, vocals = [nudge(c) for c in chords], [nudge(n) for n in bass], [nudge(w) for w in score.vocals]
    wrong = [rng.random() < 0.5 * s_pitch for _ in vocals]
    vocals = [replace(w, pitch=w.pitch + rng.choice([-1, 1, -6, 6])) if bad else w for w, bad in zip(vocals, wrong)]
    drums = list(score.drums)
    if rng.random() < s_silence:
        t0 = rng.randrange(BAR, max(BAR + 1, score.steps - 3 * BAR))
        t1 = t0 + int(BAR * (1 + 2 * s_silence))
        keep = lambda start, length: start + length <= t0 or start >= t1  # noqa: E731
        vocals = [w for w in vocals if keep(w.start, w.duration)]
        chords, bass = [c for c in chords if keep(c.start, c.duration)], [n for n in bass if keep(n.start, n.duration)]
        drums = [h for h in drums if keep(h.start, 1)]
    return replace(score, vocals=sorted(vocals, key=lambda w: w.start), chords=chords, bass=bass, drums=drums)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    """(candidates: candidate_id, prompt_id, score; items) for 16 prompts x 5 candidates, rendered once."""
    out = tmp_path_factory.mktemp("songs")
    rows, items = [], []
    for p in range(16):
        cond = condition(p)
        base = compose(cond, random.Random(1000 + p))
        for j in range(5):
            score = base if j == 0 else damage(base, random.Random(p * 100 + j))
            cid = f"p{p:02d}-c{j}"
            stems = write_stems(render(score), out / cid)
            rows.append({"candidate_id": cid, "prompt_id": f"p{p:02d}", "score": score})
            items.append(ScoringItem(cid, stems["mix"], cond["lyric"], "en", "a pop song", stems=stems))
    return pd.DataFrame(rows), items


@pytest.fixture(scope="module")
def embedded(songs):
    ids, matrix, errors = embedding_matrix(FeatureEmbedder().embed(songs[1]))
    assert not errors and matrix.shape == (80, FEATURE_DIM) and matrix.dtype == np.float32
    return ids, matrix


@pytest.fixture(scope="module")
def crowd(songs):
    crowd = SimulatedCrowd(CROWD)
    rankings, truth = crowd.rank(songs[0])
    quality = assess(rankings)
    return crowd, rankings, truth, quality.excluded, rankings_to_pairs(drop_flagged(rankings, quality), set(songs[0]["candidate_id"]))


@pytest.fixture(scope="module")
def trained(embedded, crowd):
    ids, matrix = embedded
    return RewardTrainer(TRAIN, ids, matrix, crowd[-1], FeatureEmbedder().describe(), simulated=True).train()


def test_crowd_is_simulated_seeded_and_quality_control_finds_the_careless(songs, crowd):
    sim, rankings, truth, flagged, pairs = crowd
    assert rankings["simulated"].all() and truth["simulated"].all() and sim.annotators["simulated"].all()
    again, _ = SimulatedCrowd(CROWD).rank(songs[0])
    pd.testing.assert_frame_equal(rankings, again)
    other, _ = SimulatedCrowd(CROWD.model_copy(update={"seed": 1})).rank(songs[0])
    assert not rankings["candidate_ids"].equals(other["candidate_ids"])
    assert len(rankings) == 16 * 4 * 5 and all(len(ids) == 4 for ids in rankings["candidate_ids"])
    assert rankings.groupby("task_id")["prompt_id"].nunique().max() == 1
    assert 0 < rankings["tied"].mean() < 0.2 and 0.2 < rankings["is_gold"].mean() < 1
    assert (rankings["duration_s"] > CROWD.seconds_base).all()
    careless = set(sim.annotators.loc[sim.annotators["careless"], "annotator_id"])
    assert set(flagged) == careless  # gold alone can miss one (passing 10 gold tasks by luck: p ~ 0.08); consensus does not
    _, failed = drop_failed_gold(rankings)
    assert set(failed) <= careless
    assert set(gold_accuracy(rankings).nsmallest(len(careless), "gold_accuracy")["annotator_id"]) == careless
    sound = truth[truth["candidate_id"].str.endswith("c0")]  # the undamaged songs
    assert sound["utility"].mean() > truth["utility"].mean() + 0.1


def test_utility_reads_the_decoded_score():
    cond = condition(3)
    score = compose(cond, random.Random(7))
    parts = utility_components(score)
    assert parts["in_key"] == parts["chords_in_key"] == parts["no_silence"] == 1.0
    silent = replace(score, vocals=[], chords=[], bass=[], drums=[])
    assert utility_components(silent)["no_silence"] == 0.0
    from pipeline.models.tiny.codec import SymbolicCodec, lyric_words

    tokens = SymbolicCodec().encode(score, lyric_words(cond["lyric"]))
    assert utility_components(decode_candidate(tokens, cond)) == parts


def test_full_rank_breaking_on_a_hand_example():
    # a first, b and c tied second, d last: every ordered pair except the tie
    pairs = break_ranking(["a", "b", "c", "d"], [1, 2, 2, 4])
    assert pairs == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]
    row = {"annotator_id": "x", "task_id": "t", "prompt_id": "p", "candidate_ids": ["c", "a", "b"], "ranks": [1, 1, 3]}
    table = pd.DataFrame([row])
    pairs = rankings_to_pairs(table)
    assert sorted(zip(pairs["winner"], pairs["loser"])) == [("a", "b"), ("c", "b")]


def test_agreement_ceiling_on_a_hand_example():
    # Three annotators say a > b, one says b > a; each is compared with the others' majority.
    votes = [("u1", "a", "b"), ("u2", "a", "b"), ("u3", "a", "b"), ("u4", "b", "a"), ("u1", "c", "d"), ("u2", "d", "c")]
    pairs = pd.DataFrame([{"annotator_id": u, "task_id": "t", "prompt_id": "p", "winner": w, "loser": loser}
                          for u, w, loser in votes])  # fmt: skip
    # a>b: u1-u3 agree (others 2:1 for a), u4 disagrees (others 3:0); c/d: one other each way -> disagree both
    assert agreement_ceiling(pairs) == {"agreement": 3 / 6, "pairs_compared": 6, "pairs_without_majority": 0}


def test_loss_is_trls_on_a_hand_example():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    expected = (math.log1p(math.exp(-(2.0 - 1.0 - 0.5))) + math.log1p(math.exp(-(0.5 - 1.5 - 0.5)))) / 2
    assert float(bradley_terry_loss(chosen, rejected, margin=0.5)) == pytest.approx(expected, rel=1e-6)
    assert float(bradley_terry_loss(chosen, rejected)) == pytest.approx(
        (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2, rel=1e-6)


def test_reward_model_beats_chance_and_stays_under_the_crowd_ceiling(trained):
    report = trained.report
    assert report["simulated_rankings"] is True and report["prompts"]["test"] >= 3
    # Measured at seed 0 (features v2, quality control on): held-out accuracy 0.74 (4 prompts, 426 pairs)
    # against a crowd ceiling of 0.88; ECE 0.11. Seeds 1-3: 0.75-0.80 against 0.82-0.88. The crowd here
    # also hears the wrong sung pitches, which flite does not sing, hence the wider gap than on a round.
    assert report["accuracy"] > 0.65
    assert report["accuracy_on_ceiling_pairs"] <= report["ceiling"]["agreement"] + 0.05
    assert report["train_accuracy"] > 0.7
    calibration = report["calibration"]
    assert calibration["ece"] < 0.2 and sum(b["count"] for b in calibration["bins"]) == report["pairs"]["test"]
    assert [p["epoch"] for p in report["curve"]] == list(range(1, TRAIN.num_epochs + 1))
    assert report["curve"][-1]["train_loss"] < report["curve"][0]["train_loss"]


def test_features_hear_chords_off_the_scale_and_a_band_off_the_beat(tmp_path):
    base = compose(condition(5), random.Random(1005))
    off_key = replace(base, chords=[replace(c, root=(c.root + 1) % 12) if i % 2 else c for i, c in enumerate(base.chords)])

    def late(x):
        return replace(x, start=x.start + 1, duration=x.duration - 1) if x.duration > 1 else x

    off_beat = replace(base, chords=[late(c) for c in base.chords], bass=[late(n) for n in base.bass],
                       drums=[replace(h, start=h.start + 1) for h in base.drums if h.start + 1 < base.steps])  # fmt: skip
    items = [ScoringItem(name, stems["mix"], "", "en", "", stems=stems)
             for name, score in (("base", base), ("off_key", off_key), ("off_beat", off_beat))
             for stems in [write_stems(render(score), tmp_path / name)]]  # fmt: skip
    ids, matrix, _ = embedding_matrix(FeatureEmbedder().embed(items))
    f = {name: dict(zip(FEATURE_NAMES, row)) for name, row in zip(ids, matrix)}
    assert f["off_key"]["diatonic_chord_share"] < f["base"]["diatonic_chord_share"] - 0.2
    assert f["off_key"]["out_of_scale_mean"] > f["base"]["out_of_scale_mean"]
    assert f["base"]["low_on_beat"] > 0.3 and f["off_beat"]["low_on_beat"] < -0.3  # the band enters an eighth late


def test_worker_processes_give_the_same_vectors_and_errors_in_order(songs, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "silent.flac", np.zeros(5 * 16000, dtype=np.float32), 16000)
    items = [*songs[1][:5], ScoringItem("silent", tmp_path / "silent.flac", "", "en", ""), *songs[1][5:16]]  # 17: processes pay
    alone = FeatureEmbedder(EmbeddingConfig(workers=1)).embed(items)
    shared = FeatureEmbedder(EmbeddingConfig(workers=2)).embed(items)
    assert [e.candidate_id for e in shared] == [i.candidate_id for i in items]
    assert shared[5].vector is None and shared[5].error == alone[5].error and "silent" in shared[5].error
    assert all(a.vector.tobytes() == b.vector.tobytes() for a, b in zip(alone, shared) if a.error is None)


def test_same_seed_same_weights(embedded, crowd, trained):
    ids, matrix = embedded
    again = RewardTrainer(TRAIN, ids, matrix, crowd[-1]).train()
    state, other = trained.head.state_dict(), again.head.state_dict()
    assert all(state[k].numpy().tobytes() == other[k].numpy().tobytes() for k in state)
    reseeded = RewardTrainer(TRAIN.model_copy(update={"seed": 1}), ids, matrix, crowd[-1]).train()
    assert reseeded.digest() != trained.digest()


def test_save_load_and_scorer_give_identical_rewards(trained, embedded, songs, tmp_path):
    ids, matrix = embedded
    folder = trained.save(tmp_path / "rm")
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "eval.json"}
    loaded = RewardModel.load(folder)
    assert np.array_equal(loaded.reward(matrix), trained.reward(matrix)) and loaded.digest() == trained.digest()
    assert loaded.report["calibration"]["plot"] or "matplotlib" in loaded.report["calibration"]["plot_note"]
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio")
    items = songs[1][:3] + [ScoringItem("bad", broken, "", "en", "", stems={"mix": broken})] + songs[1][3:5]
    scorer = RewardScorer(folder)
    rows = scorer.score(items)
    assert [r["candidate_id"] for r in rows] == [it.candidate_id for it in items]
    assert rows[3]["reward"] is None and "unreadable audio" in rows[3]["error"]
    good = [r["reward"] for r in rows if r["error"] is None]
    assert good == pytest.approx(trained.reward(matrix[:5]).tolist(), abs=1e-6)
    info = scorer.describe()
    assert len(info["model_digest"]) == 64 and info["embedding"]["version"] == FeatureEmbedder.version
    assert info["simulated_rankings"] is True


def test_kept_embeddings_score_as_recomputed_ones_and_other_audio_is_embedded_again(trained, embedded, songs, tmp_path):
    from pipeline.store import RoundStore
    from reward_model.embedding_cache import CachedEmbedder, audio_key, read_embeddings, write_embeddings
    from reward_model.embeddings import Embedding

    ids, matrix = embedded
    items, store = songs[1][:4], RoundStore(str(tmp_path / "round"))
    embedder = FeatureEmbedder()
    write_embeddings(store, embedder, items, [Embedding(i, v) for i, v in zip(ids[:4], matrix[:4])])
    known = read_embeddings(store, embedder)
    assert set(known) == {audio_key(it) for it in items}
    assert read_embeddings(store, FeatureEmbedder(EmbeddingConfig(sample_rate=22050))) == {}  # another embedder: none
    scorer = RewardScorer(trained.save(tmp_path / "rm"))
    scorer.embedder = CachedEmbedder(scorer.embedder, known)
    assert [r["reward"] for r in scorer.score(items)] == trained.reward(matrix[:4]).tolist()
    known[audio_key(items[0])] = matrix[7]  # a kept vector is what is scored: the song is not embedded again
    other = ScoringItem("p00-c0", songs[1][5].audio_path, "", "en", "", stems=songs[1][5].stems)  # same id, other audio
    rows = scorer.score([items[0], other])
    assert [r["reward"] for r in rows] == trained.reward(matrix[[7, 5]]).tolist()


def test_bad_inputs_name_the_culprit(embedded, crowd, songs):
    ids, matrix = embedded
    rankings = crowd[1].head(3).copy()
    rankings.at[rankings.index[1], "candidate_ids"] = ["p00-c0", "ghost-7", "p00-c2", "p00-c3"]
    with pytest.raises(ValueError, match=r"task '[^']+' by annotator '[^']+': unknown candidate\(s\) \['ghost-7'\]"):
        rankings_to_pairs(rankings, set(songs[0]["candidate_id"]))
    poisoned = matrix.copy()
    poisoned[ids.index("p02-c3"), 5] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*p02-c3"):
        RewardTrainer(TRAIN, ids, poisoned, crowd[-1])
    with pytest.raises(ValueError, match="without an embedding.*p00-c0"):
        RewardTrainer(TRAIN, ids[1:], matrix[1:], crowd[-1])


@pytest.mark.skipif(importlib.util.find_spec("muq") is None, reason="muq is not installed")
def test_muq_backend_embeds_the_mix_with_the_audio_tower(mulan_dir, songs, tmp_path):  # noqa: F811
    embedder = load_embedder(EmbeddingConfig(backend="muq", model_dir=mulan_dir, device="cpu", batch_clips=2))
    silent = tmp_path / "silent.flac"
    import soundfile as sf

    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000)
    items = songs[1][:2] + [ScoringItem("quiet", silent, "", "en", "")]
    out = embedder.embed(items)
    assert [e.vector.shape for e in out[:2]] == [(embedder.dim,)] * 2 and out[2].error and "silent" in out[2].error
    assert np.array_equal(embedder.embed(items[:1])[0].vector, out[0].vector)
    assert embedder.describe()["version"].startswith("muq-mulan-audio/")


def test_the_crowd_hears_the_key_the_music_establishes_not_the_written_one():
    """A song written 'in C major' whose notes and chords all sit in D major sounds in key."""
    from pipeline.models.tiny.score import Chord, Score, SungWord
    from pipeline.models.tiny.oracle import heard_scale, utility_components

    d_major = [2, 4, 6, 7, 9, 11, 1]
    vocals = [SungWord(4 * i, 4, 62 + (d_major[i % 7] - 2) % 12, "la", 0) for i in range(14)]
    chords = [Chord(16 * i, 16, root, quality) for i, (root, quality) in enumerate([(2, "maj"), (7, "maj"), (9, "maj"), (11, "min")])]
    song = Score(100, key=0, mode="major", gender="female", genre="pop", instruments=[], vocals=vocals, chords=chords)
    assert heard_scale(song) == set(d_major)
    parts = utility_components(song)
    assert parts["in_key"] == 1.0 and parts["chords_in_key"] == 1.0
    off = Score(100, key=0, mode="major", gender="female", genre="pop", instruments=[],
                vocals=vocals + [SungWord(60, 4, 63, "la", 0), SungWord(64, 4, 65, "la", 0)], chords=chords)  # fmt: skip
    assert utility_components(off)["in_key"] == pytest.approx(14 / 16)
