"""The one way to a model: the litellm client, its calls, batches, cache, structured (JSON) answers,
streamed answers, and thinking read apart from the answer.
"""
