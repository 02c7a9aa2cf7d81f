"""Synthetic data: documents → summaries; documents → synthetic user queries (with a person's
details); training queries → the teacher's reasoning traces over retrieved documents; kept traces →
the SFT chat dataset, and the checks on what was written."""
