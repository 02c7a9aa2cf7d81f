"""The service's routes, one router per concern: the page and health, threads, messages (turns), and
the OpenAI-compatible endpoint. :func:`t0_pipeline.serve.app.create_app` includes them all."""
