"""The musicality reward model: crowd rankings -> Bradley-Terry head on audio embeddings -> rewards.

Modules, in the order data flows through them:

* `embeddings` — one fixed-length vector per song (`features`: numpy descriptors; `muq`: MuQ-MuLan).
* `crowd` — the SIMULATED crowd of the embedded world: hidden utilities from decoded scores,
  noisy annotators, tasks, gold; every table it gives is marked `simulated`.
* `rankings` — validation, full rank-breaking into pairs, gold checks, the agreement ceiling.
* `bradley_terry` — `RewardModelConfig`, `RewardTrainer`, `RewardModel` (save/load, eval.json).
* `scorer` — `RewardScorer`: rewards for candidates from a saved model.

Nothing is imported here, so `import reward_model` stays cheap (torch loads with `bradley_terry`).
"""
