"""Reading back what a tracker wrote: TensorBoard event files, with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path


def logged_scalars(folder: Path) -> dict:
    """``{tag: {step: value}}`` of every scalar in the event files under ``folder``, and under
    ``"texts"`` every text written there, joined."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict = {"texts": ""}
    for events in sorted(Path(folder).rglob("events.out.tfevents.*")):
        reader = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        reader.Reload()
        for tag in reader.Tags()["scalars"]:
            found.setdefault(tag, {}).update({e.step: e.value for e in reader.Scalars(tag)})
        for tag in reader.Tags().get("tensors", []):
            for event in reader.Tensors(tag):
                values = event.tensor_proto.string_val
                found["texts"] += "".join(v.decode("utf-8", "replace") for v in values)
    return found
