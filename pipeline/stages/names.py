"""The round's stages, in order (their parts are assembled in flows.stages)."""

STAGES = ("lyrics", "conditions", "candidates", "scores", "reward_model", "pairs", "dpo", "merge", "sweep", "ablation")
