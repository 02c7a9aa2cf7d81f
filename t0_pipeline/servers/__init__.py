"""Model servers: the base models fetched or bundled; a vLLM (or any OpenAI-compatible) server
started here or as a Slurm job for each model a stage needs, planned from its checkpoint; and the
CPU server that speaks the same protocol where no GPU is."""
