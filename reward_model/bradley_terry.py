"""The musicality reward model: a small MLP head on audio embeddings, trained Bradley-Terry style.

The loss is TRL RewardTrainer's: -log sigmoid(r(chosen) - r(rejected) - margin), averaged over
pairs, plus its optional `center_rewards_coefficient` * mean((r+ + r-)^2) that keeps rewards near zero.
Pairs come from `rankings.rankings_to_pairs`; every candidate is embedded once (`embeddings`).

The held-out split is by prompt, never by pair: a prompt's candidates share lyrics, key and
tempo, so a pair split would leak the prompt into the test set. A prompt is held out when a
seeded hash of its id falls below `test_fraction`, so its side does not change as prompts are
added. Features are standardised with the training candidates' mean and sd, saved with the head.

`evaluate` reports held-out pairwise accuracy next to the crowd's own agreement ceiling on the
same pairs (`rankings.agreement_ceiling`) and the calibration of sigmoid(r_i - r_j) against the
crowd's observed outcomes (expected calibration error over equal-width reliability bins).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.digest import derive_seed
from reward_model.rankings import agreement_ceiling, majority_of_others
from reward_model.options import RewardModelConfig  # noqa: F401 (defined with the config section)

WEIGHTS_FILE, CONFIG_FILE, EVAL_FILE, PLOT_FILE = "model.safetensors", "config.json", "eval.json", "reliability.png"


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """TRL RewardTrainer's pair loss: mean of -log sigmoid(r+ - r- - margin)."""
    return -nn.functional.logsigmoid(chosen - rejected - margin).mean()


class RewardHead(nn.Module):
    def __init__(self, input_dim: int, config: RewardModelConfig):
        super().__init__()
        layers, width = [], input_dim
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.hidden_size
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def is_test_prompt(prompt_id: str, test_fraction: float, seed: int) -> bool:
    return derive_seed("reward-model-split", seed, str(prompt_id)) / 2.0**63 < test_fraction


def check_features(ids: list[str], matrix: np.ndarray) -> None:
    """Raises ValueError naming the candidates whose embedding has NaN or infinite values."""
    if len(ids) != len(matrix) or matrix.ndim != 2:
        raise ValueError(f"{len(ids)} candidate ids for a feature matrix of shape {matrix.shape}")
    bad = [ids[i] for i in np.flatnonzero(~np.isfinite(matrix).all(axis=1))]
    if bad:
        raise ValueError(f"non-finite (NaN/inf) embedding for candidate(s) {bad[:10]}")


class RewardModel:
    """A trained head plus the standardisation it expects; `reward(matrix)` gives one float per row."""

    def __init__(self, config: RewardModelConfig, head: RewardHead, mean: np.ndarray, std: np.ndarray,
                 embedding: dict | None = None, report: dict | None = None):  # fmt: skip
        self.config, self.head, self.embedding, self.report = config, head.eval(), embedding or {}, report
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def reward(self, matrix: np.ndarray) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float32)
        check_features([f"row {i}" for i in range(len(matrix))], matrix)
        x = torch.from_numpy((matrix - self.mean) / self.std)
        with torch.no_grad():
            return self.head(x).numpy().astype(np.float64)

    def save(self, folder: Path | str) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}
        tensors |= {"standardise.mean": torch.from_numpy(self.mean), "standardise.std": torch.from_numpy(self.std)}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        meta = {"reward_model": self.config.model_dump(), "input_dim": len(self.mean), "embedding": self.embedding}
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if self.report is not None:
            report = dict(self.report)
            report["calibration"] = dict(report["calibration"], **_plot(report["calibration"], folder / PLOT_FILE))
            (folder / EVAL_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> "RewardModel":
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"reward model directory {folder} has no {name}")
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = RewardModelConfig(**meta["reward_model"])
        tensors = load_file(str(folder / WEIGHTS_FILE))
        head = RewardHead(meta["input_dim"], config)
        head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")})
        report = json.loads((folder / EVAL_FILE).read_text()) if (folder / EVAL_FILE).is_file() else None
        mean, std = tensors["standardise.mean"].numpy(), tensors["standardise.std"].numpy()
        return cls(config, head, mean, std, meta["embedding"], report)

    def digest(self) -> str:
        """sha256 over the weights' bytes in name order: identifies a checkpoint's behaviour."""
        h = hashlib.sha256()
        for k, v in sorted(self.head.state_dict().items()):
            h.update(k.encode() + v.numpy().tobytes())
        h.update(self.mean.tobytes() + self.std.tobytes())
        return h.hexdigest()


def calibration(p: np.ndarray, y: np.ndarray, bins: int) -> dict:
    """Expected calibration error of predicted P(i beats j) against outcomes, with the reliability table."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, freq = float(p[inside].mean()), float(y[inside].mean())
            ece += inside.mean() * abs(conf - freq)
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                          "mean_predicted": conf, "observed": freq})  # fmt: skip
    return {"ece": float(ece) if len(p) else None, "pairs": int(len(p)), "bins": table}


def _plot(cal: dict, path: Path) -> dict:
    if not cal["bins"]:
        return {"plot": None, "plot_note": "no held-out pairs: nothing to plot"}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"plot": None, "plot_note": "matplotlib is not installed: reliability plot skipped (bins are above)"}
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot([b["mean_predicted"] for b in cal["bins"]], [b["observed"] for b in cal["bins"]], "o-")
    ax.set(xlabel="predicted P(i beats j)", ylabel="observed share", title=f"ECE {cal['ece']:.3f}")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return {"plot": path.name, "plot_note": None}


class RewardTrainer:
    """Trains a `RewardModel` on (candidate embeddings, crowd pairs); see the module doc."""

    def __init__(self, config: RewardModelConfig, ids: list[str], matrix: np.ndarray, pairs: pd.DataFrame,
                 embedding: dict | None = None, simulated: bool = False):  # fmt: skip
        matrix = np.asarray(matrix, dtype=np.float32)
        check_features(list(ids), matrix)
        index = {cid: i for i, cid in enumerate(ids)}
        unknown = sorted({c for c in pd.concat([pairs["winner"], pairs["loser"]]) if c not in index})
        if unknown:
            raise ValueError(f"pairs name candidate(s) without an embedding: {unknown[:10]}")
        self.config, self.matrix, self.embedding, self.simulated = config, matrix, embedding or {}, simulated
        test = pairs["prompt_id"].map(lambda p: is_test_prompt(p, config.test_fraction, config.seed)).astype(bool)
        self.train_pairs, self.test_pairs = pairs[~test].reset_index(drop=True), pairs[test].reset_index(drop=True)
        if self.train_pairs.empty:
            raise ValueError(f"no training pairs: every prompt fell in the held-out share ({config.test_fraction})")
        self._w = {s: torch.tensor([index[c] for c in p["winner"]], dtype=torch.long) for s, p in self._splits()}
        self._l = {s: torch.tensor([index[c] for c in p["loser"]], dtype=torch.long) for s, p in self._splits()}
        seen = np.unique(np.concatenate([self._w["train"].numpy(), self._l["train"].numpy()]))
        self.mean = matrix[seen].mean(axis=0)
        self.std = np.where(matrix[seen].std(axis=0) > 1e-6, matrix[seen].std(axis=0), 1.0)
        self.x = torch.from_numpy((matrix - self.mean) / self.std).float()
        self.curve: list[dict] = []

    def _splits(self):
        return (("train", self.train_pairs), ("test", self.test_pairs))

    def _loss(self, head: RewardHead, w: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        chosen, rejected = head(self.x[w]), head(self.x[l])
        loss = bradley_terry_loss(chosen, rejected, self.config.margin)
        if self.config.center_rewards_coefficient:
            loss = loss + self.config.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
        return loss

    def train(self) -> RewardModel:
        c, self.curve = self.config, []
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):  # init and dropout draw from the seed; the caller's RNG is untouched
            torch.manual_seed(c.seed)
            if c.torch_threads:
                torch.set_num_threads(c.torch_threads)
            try:
                head = self._fit(RewardHead(self.x.shape[1], c), torch.Generator().manual_seed(c.seed))
            finally:
                torch.set_num_threads(threads)
        model = RewardModel(c, head, self.mean, self.std, self.embedding)
        model.report = self.evaluate(model)
        return model

    def _fit(self, head: RewardHead, generator: torch.Generator) -> RewardHead:
        c = self.config
        optimiser = torch.optim.AdamW(head.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        w, l = self._w["train"], self._l["train"]
        for epoch in range(c.num_epochs):
            head.train()
            order, total = torch.randperm(len(w), generator=generator), 0.0
            for start in range(0, len(w), c.batch_size):
                batch = order[start : start + c.batch_size]
                loss = self._loss(head, w[batch], l[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch)
            head.eval()
            with torch.no_grad():
                point = {"epoch": epoch + 1, "train_loss": total / len(w)}
                if len(self._w["test"]):
                    point["test_loss"] = float(self._loss(head, self._w["test"], self._l["test"]))
                    point["test_accuracy"] = self._accuracy(head, "test")
            self.curve.append(point)
        return head.eval()

    def _accuracy(self, head: RewardHead, split: str, rows: np.ndarray | None = None) -> float | None:
        w, l = self._w[split], self._l[split]
        if rows is not None:
            w, l = w[torch.from_numpy(rows)], l[torch.from_numpy(rows)]
        if not len(w):
            return None
        with torch.no_grad():
            diff = head(self.x[w]) - head(self.x[l])
        return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())

    def evaluate(self, model: RewardModel) -> dict:
        c, test = self.config, self.test_pairs
        majority = majority_of_others(test) if len(test) else np.zeros(0, dtype=int)
        decided = np.flatnonzero(majority != 0)
        with torch.no_grad():
            rewards = model.head(self.x).numpy().astype(np.float64)
        a_first = (test["winner"] < test["loser"]).to_numpy()
        rw, rl = rewards[self._w["test"].numpy()], rewards[self._l["test"].numpy()]
        p = 1.0 / (1.0 + np.exp(-np.where(a_first, rw - rl, rl - rw)))  # P(lexically first id wins)
        accuracy = self._accuracy(model.head, "test")
        return {
            "simulated_rankings": bool(self.simulated),
            "prompts": {"train": self.train_pairs["prompt_id"].nunique(), "test": test["prompt_id"].nunique()},
            "pairs": {"train": len(self.train_pairs), "test": len(test)},
            "train_accuracy": self._accuracy(model.head, "train"),
            "accuracy": accuracy,
            "accuracy_standard_error": None if accuracy is None else math.sqrt(accuracy * (1 - accuracy) / len(test)),
            "ceiling": agreement_ceiling(test) if len(test) else None,
            "accuracy_on_ceiling_pairs": self._accuracy(model.head, "test", decided) if len(decided) else None,
            "calibration": calibration(p, a_first.astype(float), c.calibration_bins),
            "curve": self.curve,
            "config": c.model_dump(),
            "embedding": self.embedding,
            "test_prompts": sorted(test["prompt_id"].unique().tolist()),
        }  # fmt: skip
