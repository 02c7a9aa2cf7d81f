"""Training: the SFT dataset → a fine-tuned student (s1-style, DeepSpeed ZeRO-3 on one or many
ranks), planned for memory before it is submitted, rendered as one Slurm job from a site profile,
reported to Dagster and to experiment trackers, and handed on with its card."""
