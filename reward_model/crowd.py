"""A SIMULATED crowd that ranks candidate songs: the embedded world's stand-in for annotators.

No people rank songs on these machines, so the musicality strategy's rankings come from here, and
every table this module returns carries `simulated = True` (the data cards and eval.json repeat
it). The simulation is a Thurstonian random-utility model, the standard model of paired and
ranked judgements:

* each candidate has a hidden *musicality utility* in [0, 1], read from its decoded symbolic
  score (never from the audio, so the reward model, which only hears audio, has to learn it):
  a weighted mean of the `MusicalityWeights` components (see `utility_components`);
* an annotator perceives utility + N(0, noise_sd^2), noise_sd drawn per annotator, and ranks the
  task's candidates by perceived utility; neighbours perceived within `tie_width` are tied;
* a `careless_share` of annotators rank at random (they fail gold tasks, which is how they are
  found);
* a task shows `candidates_per_task` candidates of one prompt; tasks of a prompt overlap, and
  each task goes to `annotators_per_task` different annotators;
* a task is gold (`is_gold`) when the best candidate's utility clears the runner-up's by
  `gold_min_gap`: its known answer (`gold_answer`) is that candidate.

Everything random comes from generators seeded by (seed, purpose, id): the same inputs and seed
give the same tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline.digest import derive_seed
from pipeline.models.tiny.score import BAR, SCALES, STEPS_PER_BEAT, Score


class MusicalityWeights(BaseModel):
    """Weights of the utility's components (each in [0, 1], 1 = sound); normalised by their sum.

    Parameters:
        in_key: Share of sung notes whose pitch class is in the score's key and mode.
        chords_in_key: Share of chord time on diatonic triads (root and third in the scale).
        on_grid: Share of note onsets (voice, chords, bass) on a beat.
        smoothness: 1 - mean absolute interval between consecutive sung notes / octave (capped at 0).
        chord_tones: Share of sung notes starting on beats 1 and 3 whose pitch class is in the sounding chord.
        no_silence: 1 - share of the song inside silent stretches (nothing sounding) longer than a bar.
    """

    model_config = ConfigDict(extra="forbid")

    in_key: float = Field(1.0, ge=0)
    chords_in_key: float = Field(1.0, ge=0)
    on_grid: float = Field(1.0, ge=0)
    smoothness: float = Field(0.5, ge=0)
    chord_tones: float = Field(0.5, ge=0)
    no_silence: float = Field(1.5, ge=0)


class CrowdConfig(BaseModel):
    """The simulated campaign.

    Parameters:
        seed: Root of every random choice.
        annotators: Size of the crowd.
        candidates_per_task: k candidates of one prompt per task (fewer if the prompt has fewer).
        tasks_per_prompt: Tasks drawn per prompt, each a random k-subset (so tasks overlap).
        annotators_per_task: Different annotators per task (their overlap gives the agreement ceiling).
        noise_sd_range: Each annotator's perception noise sd, uniform in this range (utility units).
        careless_share: Share of annotators who rank at random.
        tie_width: Neighbours perceived closer than this are tied (no preference).
        gold_min_gap: A task is gold when its best utility beats the runner-up by this much.
        seconds_base: Time an annotator spends on a task besides listening (s).
        listen_share: Mean share of each song listened to (log-normal around it).
        weights: Utility component weights.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    annotators: int = Field(12, ge=2)
    candidates_per_task: int = Field(4, ge=2)
    tasks_per_prompt: int = Field(3, ge=1)
    annotators_per_task: int = Field(3, ge=1)
    noise_sd_range: tuple[float, float] = Field((0.02, 0.08))
    careless_share: float = Field(0.1, ge=0, le=1)
    tie_width: float = Field(0.004, ge=0)
    gold_min_gap: float = Field(0.08, ge=0)
    seconds_base: float = Field(20.0, ge=0)
    listen_share: float = Field(0.6, gt=0, le=1)
    weights: MusicalityWeights = Field(default_factory=MusicalityWeights)


def _chord_at(score: Score, step: int):
    for chord in score.chords:
        if chord.start <= step < chord.start + chord.duration:
            return chord
    return None


def _triad(chord) -> tuple[int, int, int]:
    return chord.root, (chord.root + (3 if chord.quality == "min" else 4)) % 12, (chord.root + 7) % 12


def heard_scale(score: Score) -> set[int]:
    """The diatonic scale a listener hears: of the 12 diatonic pitch-class sets (a minor key shares
    its relative major's), the one holding the most sung and chord duration. Annotators judge
    "in key" against it, not against the key token the model wrote, which nothing renders."""
    weight = np.zeros(12)
    for note in score.vocals:
        weight[note.pitch % 12] += note.duration
    for chord in score.chords:
        for pitch_class in _triad(chord):
            weight[pitch_class] += chord.duration
    fit = [sum(weight[(tonic + d) % 12] for d in SCALES["major"]) for tonic in range(12)]
    tonic = int(np.argmax(fit))  # ties: the lowest tonic, deterministic
    return {(tonic + d) % 12 for d in SCALES["major"]}


def utility_components(score: Score) -> dict[str, float]:
    """The musicality components of one decoded score, each in [0, 1] (1 = sound)."""
    scale = heard_scale(score)
    notes = sorted(score.vocals, key=lambda w: w.start)
    chord_steps = sum(c.duration for c in score.chords)
    diatonic = sum(c.duration for c in score.chords
                   if c.root in scale and (c.root + (3 if c.quality == "min" else 4)) % 12 in scale)  # fmt: skip
    onsets = [w.start for w in notes] + [c.start for c in score.chords] + [n.start for n in score.bass]
    intervals = [abs(b.pitch - a.pitch) for a, b in zip(notes, notes[1:])]
    strong = [w for w in notes if w.start % (2 * STEPS_PER_BEAT) == 0]
    agree = 0
    for w in strong:
        chord = _chord_at(score, w.start)
        if chord is not None:
            tones = set(_triad(chord))
            agree += w.pitch % 12 in tones
    sounding = np.zeros(max(score.steps, 1), dtype=bool)
    for start, length in [(w.start, w.duration) for w in notes] + [(c.start, c.duration) for c in score.chords] + \
            [(n.start, n.duration) for n in score.bass] + [(h.start, 1) for h in score.drums]:
        sounding[start:start + length] = True
    silent, run = 0, 0
    for on in list(sounding) + [True]:
        if on:
            silent += run if run > BAR else 0
            run = 0
        else:
            run += 1
    return {
        "in_key": sum(w.pitch % 12 in scale for w in notes) / len(notes) if notes else 0.0,
        "chords_in_key": diatonic / chord_steps if chord_steps else 0.0,
        "on_grid": sum(t % STEPS_PER_BEAT == 0 for t in onsets) / len(onsets) if onsets else 0.0,
        "smoothness": max(0.0, 1.0 - float(np.mean(intervals)) / 12.0) if intervals else 0.0,
        "chord_tones": agree / len(strong) if strong else 0.0,
        "no_silence": 1.0 - silent / len(sounding),
    }


def utility(score: Score, weights: MusicalityWeights | None = None) -> float:
    """The hidden musicality utility: the weighted mean of `utility_components`."""
    w = (weights or MusicalityWeights()).model_dump()
    parts = utility_components(score)
    return float(sum(w[k] * parts[k] for k in w) / max(sum(w.values()), 1e-12))


def decode_candidate(tokens: dict, condition: dict) -> Score:
    """A sampled candidate's score, decoded from its token streams (`read_tokens`) as the renderer did."""
    from pipeline.models.tiny.codec import SymbolicCodec, lyric_words

    return SymbolicCodec().decode(tokens, condition, lyric_words(condition.get("lyric", "")))


class SimulatedCrowd:
    """Ranks candidates like a noisy crowd would; see the module doc for the model."""

    def __init__(self, config: CrowdConfig | None = None):
        self.config = config or CrowdConfig()
        c = self.config
        rng = np.random.default_rng(derive_seed("crowd-annotators", c.seed))
        careless = rng.permutation(c.annotators) < round(c.careless_share * c.annotators)
        self.annotators = pd.DataFrame({
            "annotator_id": [f"sim-{i:03d}" for i in range(c.annotators)],
            "noise_sd": rng.uniform(*c.noise_sd_range, size=c.annotators),
            "careless": careless,
            "simulated": True,
        })  # fmt: skip

    def utilities(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """candidate_id, prompt_id, utility, its components, duration_s (the hidden truth; simulated)."""
        rows = []
        for row in candidates.itertuples(index=False):
            parts = utility_components(row.score)
            rows.append({"candidate_id": row.candidate_id, "prompt_id": row.prompt_id,
                         "utility": utility(row.score, self.config.weights), **parts,
                         "duration_s": row.score.duration_seconds, "simulated": True})  # fmt: skip
        return pd.DataFrame(rows)

    def rank(self, candidates: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """candidates: rows of candidate_id, prompt_id, score (a decoded `Score`).

        Returns (rankings, utilities); a prompt with fewer than two candidates gives no task. A
        rankings row is one annotator's answer to one task: annotator_id, task_id, prompt_id,
        candidate_ids (best first), ranks (1 = best, aligned with candidate_ids; tied candidates
        share a rank), tied, is_gold, gold_answer, duration_s, simulated."""
        repeated = candidates["candidate_id"][candidates["candidate_id"].duplicated()]
        if len(repeated):
            raise ValueError(f"duplicate candidate ids: {sorted(repeated)[:5]}")
        c = self.config
        truth = self.utilities(candidates)
        rows = []
        for prompt_id, group in truth.groupby("prompt_id", sort=True):
            group = group.sort_values("candidate_id")
            if len(group) < 2:
                continue
            k = min(c.candidates_per_task, len(group))
            rng = np.random.default_rng(derive_seed("crowd-tasks", c.seed, str(prompt_id)))
            for t in range(c.tasks_per_prompt):
                shown = group.iloc[np.sort(rng.choice(len(group), size=k, replace=False))]
                task_id = f"{prompt_id}/t{t}"
                u = shown["utility"].to_numpy()
                order = np.argsort(-u, kind="stable")
                gold = bool(u[order[0]] - u[order[1]] >= c.gold_min_gap)
                who = rng.choice(c.annotators, size=min(c.annotators_per_task, c.annotators), replace=False)
                for a in who:
                    rows.append(self._answer(task_id, str(prompt_id), shown, int(a), gold, rng))
                    rows[-1]["gold_answer"] = shown["candidate_id"].iloc[order[0]] if gold else None
        rankings = pd.DataFrame(rows, columns=["annotator_id", "task_id", "prompt_id", "candidate_ids", "ranks", "tied",
                                               "is_gold", "gold_answer", "duration_s", "simulated"])  # fmt: skip
        return rankings, truth

    def _answer(self, task_id: str, prompt_id: str, shown: pd.DataFrame, a: int, gold: bool,
                rng: np.random.Generator) -> dict:  # fmt: skip
        c, annotator = self.config, self.annotators.iloc[a]
        u = shown["utility"].to_numpy()
        if annotator["careless"]:
            perceived = rng.standard_normal(len(u))
        else:
            perceived = u + annotator["noise_sd"] * rng.standard_normal(len(u))
        order = np.argsort(-perceived, kind="stable")
        ranks, rank = [], 1
        for pos, i in enumerate(order):
            if pos and (annotator["careless"] or perceived[order[pos - 1]] - perceived[i] >= c.tie_width):
                rank = pos + 1
            ranks.append(rank)
        listen = shown["duration_s"].to_numpy() * np.minimum(c.listen_share * rng.lognormal(0.0, 0.3, len(u)), 1.0)
        return {"annotator_id": annotator["annotator_id"], "task_id": task_id, "prompt_id": prompt_id,
                "candidate_ids": [shown["candidate_id"].iloc[i] for i in order], "ranks": ranks,
                "tied": len(set(ranks)) < len(ranks), "is_gold": gold,
                "duration_s": round(float(c.seconds_base + listen.sum()), 2), "simulated": True}  # fmt: skip
