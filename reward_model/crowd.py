"""A SIMULATED crowd that ranks candidate songs: the embedded world's stand-in for annotators.

No people rank songs on these machines, so the musicality strategy's rankings come from here, and
every table this module returns carries `simulated = True` (the data cards and eval.json repeat
it). The simulation is a Thurstonian random-utility model, the standard model of paired and
ranked judgements:

* each candidate has a hidden *musicality utility* in [0, 1], read from its decoded symbolic
  score (never from the audio, so the reward model, which only hears audio, has to learn it):
  a weighted mean of the `MusicalityWeights` components (`pipeline.models.tiny.oracle`);
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

from pipeline.digest import derive_seed
from pipeline.models.tiny.oracle import MusicalityWeights, decode_candidate, utility, utility_components  # noqa: F401 (the crowd's API)
from reward_model.options import CrowdConfig  # noqa: F401 (defined with the config section)


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
