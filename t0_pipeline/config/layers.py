"""The config's layers and their merge: defaults ← file ← ``T0_<SECTION>__<FIELD>`` environment
← run config (overrides), with errors that name the layer and the setting."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel as _PydanticModel

from t0_pipeline.config.models import size_entries
from t0_pipeline.config.pipeline import PipelineConfig

ENV_PREFIX = "T0_"


def default_layer() -> dict:
    """Every section's defaults as plain data, before size entries and chat-format markers are
    derived."""
    from pydantic import TypeAdapter

    return {
        name: TypeAdapter(field.annotation).dump_python(field.default_factory(), mode="python")
        for name, field in PipelineConfig.model_fields.items()
    }


def _named_entry_maps(model: type = None, prefix: str = "") -> set[str]:  # type: ignore[assignment]
    """Dotted paths of the settings that are maps of named entries (``llm.roles``, ``train.sizes``,
    …; ``*`` stands for an entry's name), where ``null`` removes an entry instead of setting a
    value."""
    import typing

    found: set[str] = set()
    for name, field in (model or PipelineConfig).model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            found.add(path)
            value = typing.get_args(annotation)[-1]
            if isinstance(value, type) and issubclass(value, _PydanticModel):
                found |= _named_entry_maps(value, f"{path}.*.")
        elif isinstance(annotation, type) and issubclass(annotation, _PydanticModel):
            found |= _named_entry_maps(annotation, f"{path}.")
    return found


def deep_merge(
    base: dict, override: dict, path: str = "", entry_maps: set[str] | None = None
) -> dict:
    """``override`` on top of ``base``: mappings merge key by key, anything else (lists included)
    replaces.

    In a map of named entries (``llm.roles``, ``evaluation.models``, ``train.sizes``,
    ``serve.profiles``), ``null`` removes the entry, so a default model, role or size can be
    dropped; elsewhere it sets the value.
    """
    import fnmatch

    entry_maps = _named_entry_maps() if entry_maps is None else entry_maps
    in_entry_map = any(fnmatch.fnmatchcase(path, pattern) for pattern in entry_maps)
    out = dict(base)
    for key, value in override.items():
        if value is None and in_entry_map:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(
                out[key], value, f"{path}.{key}" if path else str(key), entry_maps
            )
        else:
            out[key] = value
    return out


def env_layer(environ: dict[str, str] | None = None) -> dict[str, tuple[str, object]]:
    """Settings from ``T0_<SECTION>__<FIELD>[__…]`` variables: {dotted path: (variable, value)}.

    Values are read as JSON when they parse (numbers, lists, ``null``), else as text. Only variables
    whose first part names a config section count (``T0_DATA_DIR`` and ``T0_LLM_API_KEY`` are other
    settings).
    """
    import json
    import os

    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, object]] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in PipelineConfig.model_fields or not all(parts):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        found[".".join(parts)] = (var, value)
    return found


def _nest(dotted: dict[str, object]) -> dict:
    out: dict = {}
    for path, value in dotted.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def read_config_file(path: Path | str, _seen: tuple[Path, ...] = ()) -> dict:
    """The settings in a .json/.yaml/.toml file, as data (not yet validated). A file with
    ``extends: OTHER`` (a path relative to the file) is OTHER's settings with its own on top."""
    from t0_pipeline.artifacts import T0Error

    data = _read_one_file(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise T0Error(f"config file {path}: extends must be one file's path, not {parent!r}.")
    base = (Path(path).parent / parent).resolve()
    if base in _seen or base == Path(path).resolve():
        raise T0Error(f"config file {path}: extends {parent} extends it back; break the circle.")
    return deep_merge(read_config_file(base, (*_seen, Path(path).resolve())), data)


def _read_one_file(path: Path | str) -> dict:
    import json

    from t0_pipeline.artifacts import T0Error

    path = Path(path)
    if not path.is_file():
        raise T0Error(f"config file {path} does not exist; check the --config path.")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise T0Error(f"config file {path} is binary, not a text file; pass a .yaml/.json/.toml.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise T0Error(
            f"config file {path} is not UTF-8 (line {line}, byte {exc.start}); re-save it as UTF-8."
        ) from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # syntax errors from json/yaml/toml
        raise T0Error(
            f"config file {path} could not be parsed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]})."
        ) from None
    if not isinstance(data, dict):
        raise T0Error(
            f"config file {path} must hold a mapping of sections (source:, llm:, …), not "
            f"{type(data).__name__}."
        )
    return data


def _has(data: dict, loc: tuple) -> bool:
    node: object = data
    for part in loc:
        if isinstance(node, list):  # an item of a list this layer set
            return True
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def _running_elsewhere(layer: dict) -> dict:
    """An evaluation entry or role given an ``api_base`` but no ``serve`` section is already running
    there: a ``serve`` from a lower layer (size entries have one) is dropped rather than silently
    winning over that address."""
    for section, key in (("evaluation", "models"), ("llm", "roles")):
        entries = (
            (layer.get(section) or {}).get(key) if isinstance(layer.get(section), dict) else None
        )
        if not isinstance(entries, dict):
            continue
        entries = {
            name: {**entry, "serve": None}
            if isinstance(entry, dict) and "api_base" in entry and "serve" not in entry
            else entry
            for name, entry in entries.items()
        }
        layer = {**layer, section: {**layer[section], key: entries}}
    return layer


def load_config(
    path: Path | str | None = None,
    *,
    overrides: dict | None = None,
    environ: dict[str, str] | None = None,
    overrides_from: str = "run config overrides",
) -> PipelineConfig:
    """The pipeline's settings: defaults, then the file at ``path``, then ``T0_…__…`` environment
    variables, then ``overrides`` (run config). Each layer sets exactly the fields it names (a deep
    merge), so a file with only ``llm.roles.agent.api_base`` keeps every other role and the agent's
    model, tokens and temperature. ``environ`` defaults to the process environment;
    ``overrides_from`` names the last layer in errors (the command line, for ``t0``).
    """
    from pydantic import ValidationError

    file_data = read_config_file(path) if path is not None else {}
    env = env_layer(environ)
    layers = [
        (f"config file {path}", file_data),
        ("environment", _nest({k: v for k, (_, v) in env.items()})),
        (overrides_from, overrides or {}),
    ]
    layers = [(name, _running_elsewhere(layer)) for name, layer in layers]
    defaults = default_layer()
    merged = defaults
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    _with_size_entries(merged, defaults)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, layers, env, path) from None


def _with_size_entries(merged: dict, defaults: dict) -> None:
    """Add each ``train.sizes`` entry's evaluation models (base and student) under the models the
    layers set: a size's entries are defaults too, so settings naming one (``t0-7b.api_base``)
    change only those fields."""
    evaluation, train = merged.get("evaluation") or {}, merged.get("train") or {}
    if not (
        isinstance(evaluation, dict)
        and isinstance(train, dict)
        and evaluation.get("with_sizes", True)
        and isinstance(train.get("sizes"), dict)
    ):
        return
    derived: dict = {}
    for size, base_model in train["sizes"].items():
        if isinstance(base_model, str):
            derived.update({n: e.model_dump() for n, e in size_entries(size, base_model).items()})
    models = evaluation.get("models") if isinstance(evaluation.get("models"), dict) else {}
    combined = deep_merge(derived, models)
    order = dict.fromkeys([*defaults["evaluation"]["models"], *derived, *models])
    merged["evaluation"] = {
        **evaluation,
        "models": {k: combined[k] for k in order if k in combined},
    }


def _config_error(exc, layers: list[tuple[str, dict]], env: dict, path) -> Exception:
    """One line for the first validation error: the layer that set the bad value (the environment
    variable by name), the setting, and what to do (a close known name for a misspelt one)."""
    from t0_pipeline.artifacts import T0Error

    err = exc.errors()[0]
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    if not loc:  # a rule across settings (PipelineConfig's own check): its message says it all
        return T0Error(f"config: {str(err['msg']).removeprefix('Value error, ').rstrip('.')}.")
    source = next(
        (name for name, layer in reversed(layers) if _has(layer, loc)),
        layers[0][0] if path else "config",
    )
    if source == "environment":
        source = "environment variable " + next(
            (
                var
                for dotted, (var, _) in env.items()
                if where.startswith(dotted) or dotted.startswith(where)
            ),
            "T0_…",
        )
    if err["type"] == "extra_forbidden":
        import difflib

        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = (
            f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?"
            if close
            else f"known here: {', '.join(known)}."
        )
        return T0Error(f"{source}: unknown setting {where!r}; {hint} (`t0 config` lists them all)")
    said = str(err["msg"]).removeprefix("Value error, ")
    return T0Error(
        f"{source}: field {where!r}: {said}; fix the value (see `t0 config` for defaults)."
    )


def _fields_at(loc: tuple) -> list[str]:
    """The setting names valid at ``loc`` (a path into PipelineConfig; mapping keys are skipped
    over)."""
    import typing

    model: typing.Any = PipelineConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = getattr(model, "model_fields", {})
        if str(part) not in fields:
            return []
        annotation = fields[str(part)].annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is dict:
            annotation = args[-1]
            if parts:
                parts.pop(0)  # the mapping's key (a role or model name)
            else:
                return []
        elif args and not isinstance(annotation, type):
            annotation = next(
                (a for a in args if isinstance(a, type) and issubclass(a, _PydanticModel)),
                annotation,
            )
        model = annotation
    return sorted(getattr(model, "model_fields", {}))
