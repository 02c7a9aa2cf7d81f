"""The causal-LM loss computed a chunk of tokens at a time, so a 32,768-token sequence never holds
its whole ``tokens × vocabulary`` logits (~60 GB with the fp32 log-probabilities and gradients
for Qwen2.5) at once.

:func:`use_chunked_loss` changes one loaded model in place: when it is called with ``labels`` it
runs the decoder, then hands the final hidden states to its output projection with the labels;
the projection computes each chunk's logits, fp32 cross-entropy and nothing else, and recomputes
them in the backward pass (activation checkpointing per chunk). The loss is transformers'
``ForCausalLMLoss`` (labels shifted by one, ``-100`` ignored, the sum over ``num_items_in_batch``
when the trainer passes it, else the mean), so the loss and gradients equal the plain ones.

The chunks run inside one call of the output projection, so under DeepSpeed ZeRO-3 its weight is
gathered once per step on every rank, however many chunks each rank's sequence has: ranks with
sequences of different lengths never disagree on the number of collectives. Called without labels
(generation) the model gives logits as before.
"""

from __future__ import annotations

IGNORE = -100


def _chunk_loss(hidden, labels, weight, bias):
    import torch.nn.functional as F

    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")


def chunked_cross_entropy(hidden, weight, bias, labels, chunk_tokens: int, num_items=None):
    """``ForCausalLMLoss`` over ``hidden @ weight.T``, ``chunk_tokens`` rows of logits at a time."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1).to(hidden.device)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = flat.new_zeros((), dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk_tokens):
        rows = shifted[start : start + chunk_tokens]
        part = flat[start : start + chunk_tokens]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, part, rows, weight, bias, use_reentrant=False)
        else:
            total = total + _chunk_loss(part, rows, weight, bias)
    if num_items is not None:
        if torch.is_tensor(num_items):
            num_items = num_items.to(total.device)
        return total / num_items
    # the mean over the tokens that count, as cross_entropy(reduction="mean") takes it
    return total / (shifted != IGNORE).sum()


def _head_forward(head, chunk_tokens: int):
    import torch.nn.functional as F

    def forward(hidden, labels=None, num_items_in_batch=None):
        if labels is None:
            return F.linear(hidden, head.weight, head.bias)
        return chunked_cross_entropy(
            hidden, head.weight, head.bias, labels, chunk_tokens, num_items_in_batch
        )

    return forward


def _model_forward(model, decoder, head):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    plain = model.forward

    def forward(input_ids=None, attention_mask=None, labels=None, **kwargs):
        if labels is None:
            return plain(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("use_cache", None)
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        loss = head(out.last_hidden_state, labels=labels, num_items_in_batch=num_items)
        return CausalLMOutputWithPast(loss=loss, logits=None)

    return forward


def use_chunked_loss(model, chunk_tokens: int = 1024):
    """Make ``model`` (a transformers causal LM, or a PEFT model around one) compute its training
    loss in chunks of ``chunk_tokens`` tokens; returns the model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    decoder = inner.get_decoder()
    if head is None or decoder is None:
        from t0_pipeline.artifacts import T0Error

        raise T0Error(
            f"{type(inner).__name__} exposes no decoder and output projection; use train.loss: "
            "plain for this model."
        )
    head.forward = _head_forward(head, chunk_tokens)
    inner.forward = _model_forward(inner, decoder, head)
    return model
