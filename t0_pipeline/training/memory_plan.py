"""Per-GPU memory of a training run, planned before it is submitted.

A plan is made from the model's shape (``config.json``, :mod:`t0_pipeline.servers.model_shape`),
the allocation (nodes × GPUs, GPU memory), the longest sequence trained and the memory settings
(loss: plain / chunked / liger; DeepSpeed ZeRO-3 with no offload, optimizer offload or full
offload). Items, per GPU, with P parameters on N GPUs and w bytes per element (2 in bf16):

- **model states** under ZeRO-3 (DeepSpeed's own accounting, ``estimate_zero3_model_states_mem_
  needs``: 18 bytes per parameter over N, plus 4 bytes per parameter of the largest module, which
  is gathered whole): the parameter shard (w·P/N), the fp32 gradient shard (4·P/N), the fp32
  master weights and Adam moments (12·P/N), the gathered module (2w × its parameters). Optimizer
  offload moves gradients and optimizer states to CPU memory; full offload the parameters too.
- **activations** with gradient checkpointing: every layer's input kept (layers × seq × hidden × w)
  plus one layer recomputed during the backward pass (its attention and gated-MLP tensors, fp32
  norm copies and the gradients of the widest ones); without checkpointing every layer's.
- **logits and loss**: the plain loss (transformers' ``ForCausalLMLoss``) holds the fp32
  log-probabilities, their gradient and the logits' gradient together: 12 bytes × seq × vocab,
  ~60 GB for one 32,768-token sequence of Qwen2.5's 151,936-token vocabulary. The chunked loss
  (``t0_pipeline.training.loss``) holds that for one chunk of ``loss_chunk_tokens``; Liger Kernel's
  fused linear cross-entropy holds a chunk plus the output projection's fp32 gradient.
- **framework reserve**: CUDA context, NCCL and cuBLAS workspaces and the caching allocator's
  fragmentation: 2 GiB + 5% of the GPU.

:func:`remedies` lists the changes that make a plan fit, cheapest first; :func:`fitting_settings`
is what ``train.loss: auto`` / ``train.deepspeed: auto`` pick at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from t0_pipeline.servers.model_shape import ModelShape

GIB = 2**30
LOSSES = ("plain", "chunked", "liger")
OFFLOADS = ("none", "optimizer", "all")
# the DeepSpeed config each offload setting runs with
OFFLOAD_CONFIGS = {"none": "zero3", "optimizer": "zero3_offload_optimizer", "all": "zero3_offload"}


@dataclass(frozen=True)
class RunShape:
    """What memory depends on: the model, the allocation, the sequence and the memory settings."""

    shape: ModelShape
    nodes: int = 1
    gpus_per_node: int = 1
    gpu_memory_gib: float | None = None  # None: no cap known (CPU ranks)
    cpu_memory_gib: float | None = None  # per node, for offload
    seq: int = 32768  # the longest sequence trained (tokens)
    batch: int = 1
    dtype_bytes: int = 2  # 2 = bf16, 4 = fp32
    checkpointing: bool = True
    loss: str = "plain"
    chunk_tokens: int = 1024
    offload: str = "none"
    zero3: bool = True  # False: every rank holds the whole model (one process, or plain DDP)
    lora: bool = False  # adapters only: no gradients or optimizer states for the base weights

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def reserve_gib(self) -> float:
        return 2 + 0.05 * self.gpu_memory_gib if self.gpu_memory_gib else 0.0


@dataclass
class Plan:
    run: RunShape
    items: list[tuple[str, float, str]] = field(default_factory=list)  # (item, GiB, how counted)
    cpu_gib_per_node: float = 0.0  # offloaded states per node

    @property
    def total_gib(self) -> float:
        return sum(gib for _, gib, _ in self.items)

    @property
    def model_states_gib(self) -> float:
        return sum(g for name, g, _ in self.items if name in MODEL_STATE_ITEMS)

    @property
    def fits(self) -> bool:
        run = self.run
        gpu_ok = run.gpu_memory_gib is None or self.total_gib <= run.gpu_memory_gib
        cpu_ok = run.cpu_memory_gib is None or self.cpu_gib_per_node <= run.cpu_memory_gib
        return gpu_ok and cpu_ok

    @property
    def margin_gib(self) -> float | None:
        """GPU memory left (negative: short by)."""
        if self.run.gpu_memory_gib is None:
            return None
        return self.run.gpu_memory_gib - self.total_gib

    def verdict(self) -> str:
        run, total = self.run, self.total_gib
        if run.gpu_memory_gib is None:
            return f"{total:.1f} GiB per rank (no GPU memory to plan against)"
        cap = f"{total:.1f} of {run.gpu_memory_gib:.1f} GiB per GPU"
        if run.cpu_memory_gib is not None and self.cpu_gib_per_node > run.cpu_memory_gib:
            return (
                f"does not fit: offloaded states need {self.cpu_gib_per_node:.0f} GiB of CPU "
                f"memory per node, nodes have {run.cpu_memory_gib:.0f} ({cap})"
            )
        if self.fits:
            return f"fits: {cap}, {self.margin_gib:.1f} GiB to spare"
        return f"does not fit: {cap}, short by {-self.margin_gib:.1f} GiB"

    def as_dict(self) -> dict:
        return {
            "items_gib": {name: round(gib, 3) for name, gib, _ in self.items},
            "total_gib": round(self.total_gib, 3),
            "model_states_gib": round(self.model_states_gib, 3),
            "gpu_memory_gib": self.run.gpu_memory_gib,
            "fits": self.fits,
            "verdict": self.verdict(),
            "seq": self.run.seq,
            "gpus": self.run.gpus,
            "loss": self.run.loss,
            "offload": self.run.offload,
        }


MODEL_STATE_ITEMS = ("parameters", "gradients", "optimizer states", "gathered module")


def _model_states(run: RunShape) -> tuple[list[tuple[str, float, str]], float]:
    if not run.zero3:
        return _unsharded_states(run), 0.0
    shape, w = run.shape, run.dtype_bytes
    p, n = shape.params(), run.gpus
    dtype = "bf16" if w == 2 else f"{8 * w}-bit"
    params = w * p / n if run.offload != "all" else 0.0
    states = p / n if run.offload == "none" and not run.lora else 0.0  # × bytes per parameter
    where = "" if run.offload == "none" else " (offloaded: on CPU)"
    largest = shape.largest_module_params()
    items = [
        ("parameters", params / GIB, f"{dtype} shard: {w} B × {p / 1e9:.2f}B params / {n}"),
        ("gradients", 4 * states / GIB, f"fp32 shard: 4 B × params / {n}{where}"),
        (
            "optimizer states",
            12 * states / GIB,
            f"fp32 master + Adam m, v: 12 B × params / {n}{where}",
        ),
        (
            "gathered module",
            2 * w * largest / GIB,
            f"ZeRO-3 gathers the largest module whole: {2 * w} B × {largest / 1e6:.0f}M",
        ),
    ]
    offloaded = {"none": 0.0, "optimizer": 16 * p, "all": (16 + w) * p}[run.offload]
    return items, offloaded / run.nodes / GIB


def _unsharded_states(run: RunShape) -> list[tuple[str, float, str]]:
    """One process, or plain DDP: every rank holds the whole model, its gradients and torch
    AdamW's two moments, all in the weights' dtype (no fp32 master copy)."""
    p, w = run.shape.params(), run.dtype_bytes
    trained = 0 if run.lora else p
    dtype = "bf16" if w == 2 else f"{8 * w}-bit"
    return [
        ("parameters", w * p / GIB, f"{dtype}: {w} B × {p / 1e9:.2f}B params, not sharded"),
        ("gradients", w * trained / GIB, f"{w} B × trained params"),
        ("optimizer states", 2 * w * trained / GIB, f"Adam m, v: {2 * w} B × trained params"),
    ]


def layer_activation_bytes_per_token(shape: ModelShape, w: int) -> int:
    """One decoder layer's saved tensors per token: fp32 copies in the two RMS norms (8·h), the
    normed inputs, queries, attention output and residual (4w·h), keys and values (2w·kv), the MLP's
    gate, up, activation and product (4w·i) and the gradients of two of them in the backward pass
    (2w·i)."""
    h, i = shape.hidden, shape.intermediate
    return 8 * h + 4 * w * h + 2 * w * shape.kv_width + 6 * w * i


def _activations(run: RunShape) -> list[tuple[str, float, str]]:
    shape, w, tokens = run.shape, run.dtype_bytes, run.batch * run.seq
    layer = layer_activation_bytes_per_token(shape, w) * tokens
    if not run.checkpointing:
        return [("activations", shape.layers * layer / GIB, f"{shape.layers} layers, all kept")]
    kept = shape.layers * tokens * shape.hidden * w
    return [
        (
            "activations (checkpoints)",
            kept / GIB,
            f"each layer's input: {shape.layers} × {tokens} tokens × {shape.hidden} × {w} B",
        ),
        ("activations (one layer)", layer / GIB, "the layer being recomputed, and its gradients"),
    ]


def _loss(run: RunShape) -> tuple[str, float, str]:
    shape, tokens = run.shape, run.batch * run.seq
    v = shape.vocab
    if run.loss == "plain":
        how = f"fp32 log-probs, their gradient, the logits' gradient: 12 B × {tokens} × {v}"
        return ("logits and loss", 12 * tokens * v / GIB, how)
    chunk = min(run.chunk_tokens, tokens)
    if run.loss == "chunked":
        how = f"one chunk of {chunk} tokens at a time: 12 B × {chunk} × {v}, + hidden gradient"
        return ("logits and loss", (12 * chunk * v + 4 * tokens * shape.hidden) / GIB, how)
    extra = 4 * v * shape.hidden + 4 * tokens * shape.hidden
    how = f"fused: a chunk's logits (6 B × {chunk} × {v}) + the output projection's fp32 gradient"
    return ("logits and loss", (6 * chunk * v + extra) / GIB, how)


def plan_memory(run: RunShape) -> Plan:
    states, cpu = _model_states(run)
    items = states + _activations(run) + [_loss(run)]
    if run.gpu_memory_gib:
        items.append(
            ("framework reserve", run.reserve_gib, "CUDA context, NCCL, allocator: 2 GiB + 5%")
        )
    return Plan(run=run, items=items, cpu_gib_per_node=cpu)


def fitting_settings(run: RunShape, losses=("chunked",), offload: bool = True) -> Plan:
    """The cheapest settings that fit, in the order a user pays least for them: the run as it is,
    a chunked (or fused) loss (``losses``, when the run's is plain), then optimizer offload, then
    full offload (when ``offload``); the last tried when none fits."""
    steps = [run] + [replace(run, loss=loss) for loss in losses if run.loss == "plain"]
    if offload and run.zero3 and run.offload == "none":
        steps += [replace(steps[-1], offload=level) for level in ("optimizer", "all")]
    for step in steps:
        plan = plan_memory(step)
        if plan.fits:
            break
    return plan


@dataclass
class Remedy:
    change: str  # what to change, in the user's terms
    plan: Plan
    drops: str = ""  # what the change costs in training examples


def largest_fitting_seq(run: RunShape, step: int = 256) -> int:
    """The longest sequence (a multiple of ``step``, at most the run's) that fits with the cheapest
    settings; 0 when none does."""
    lo, hi = 0, run.seq // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fitting_settings(replace(run, seq=mid * step)).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo * step


def settings_text(run: RunShape) -> str:
    loss = f"train.loss: {run.loss}"
    return (
        loss
        if run.offload == "none"
        else f"{loss}, train.deepspeed: {OFFLOAD_CONFIGS[run.offload]}"
    )


def remedies(run: RunShape, lengths: list[int] | None = None, max_nodes: int = 32) -> list[Remedy]:
    """Changes that make the run fit, cheapest first: the loss in chunks, optimizer offload, full
    offload (each on top of the one before; no example dropped), more nodes, a shorter block (with
    the examples it would drop, when the SFT data's lengths are known)."""
    out: list[Remedy] = []
    chunked = replace(run, loss="chunked") if run.loss == "plain" else run
    if run.loss == "plain":
        out.append(Remedy("train.loss: chunked (or liger on GPUs)", plan_memory(chunked)))
    if run.zero3 and run.offload == "none":
        for offload in ("optimizer", "all"):
            name = OFFLOAD_CONFIGS[offload]
            out.append(
                Remedy(f"+ train.deepspeed: {name}", plan_memory(replace(chunked, offload=offload)))
            )
    if run.zero3:
        for nodes in range(run.nodes + 1, max_nodes + 1):
            more = fitting_settings(replace(run, nodes=nodes), offload=False)
            if more.fits:
                change = f"{nodes} nodes (the site profile's sizes.<size>.nodes)"
                out.append(Remedy(f"{change} with {settings_text(more.run)}", more))
                break
    seq = largest_fitting_seq(run)
    if 0 < seq < run.seq:
        drops = "the SFT data is not built yet, so the examples it drops are unknown"
        if lengths is not None:
            drops = f"drops {sum(1 for n in lengths if n > seq)} of {len(lengths)} examples"
        shorter = fitting_settings(replace(run, seq=seq))
        change = f"train.block_size: {seq} with {settings_text(shorter.run)}"
        out.append(Remedy(change, shorter, drops))
    return out


def render(plan: Plan, fixes: list[Remedy] | None = None) -> str:
    run = plan.run
    head = (
        f"{run.shape.params() / 1e9:.2f}B parameters on {run.nodes} node(s) × {run.gpus_per_node} "
        f"GPU(s), sequence {run.seq} × batch {run.batch}, loss {run.loss}, "
        f"{'ZeRO-3' if run.zero3 else 'no sharding'}, offload {run.offload}"
    )
    lines = [head, ""]
    width = max(len(name) for name, _, _ in plan.items)
    for name, gib, how in plan.items:
        lines.append(f"  {name:<{width}}  {gib:8.2f} GiB   {how}")
    lines.append(f"  {'total':<{width}}  {plan.total_gib:8.2f} GiB")
    if plan.cpu_gib_per_node:
        lines.append(f"  offloaded to CPU: {plan.cpu_gib_per_node:.0f} GiB per node")
    lines += ["", plan.verdict()]
    if fixes and not plan.fits:
        lines += ["", "What would make it fit, cheapest first:"]
        for fix in fixes:
            mark = "fits" if fix.plan.fits else "still short"
            tail = f"; {fix.drops}" if fix.drops else "; drops no example"
            lines.append(f"  - {fix.change}: {fix.plan.total_gib:.1f} GiB per GPU ({mark}){tail}")
    return "\n".join(lines)
