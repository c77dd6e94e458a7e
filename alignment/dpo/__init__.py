"""DPO per preference: run options, the multi-stream TRL trainer, and the dpo stage."""
