"""Serving commands: serve (the chat page, JSON API and OpenAI-compatible endpoint) and keys."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cli.common import ConfigFile, DataDir, SetOpt, app, setup

_SERVE_STUDENT = typer.Option(
    None,
    "--student",
    help="Serve this trained size (a train.sizes key, e.g. 7B) in every profile: its final/ as "
    "the reasoner, asked as it was trained, and its base model as the agent.",
)
_SERVE_SERVERS = typer.Option(
    "local",
    "--servers",
    help="Where the models with a serve section start: local (this machine: vLLM on its GPUs, or "
    "servers.command) or slurm (one job per model on --site).",
)
_SERVE_SITE = typer.Option(None, "--site", help="Slurm: the site profile (slurm/profiles).")
_SERVE_PROFILES_DIR = typer.Option(None, help="Slurm: a folder of your own site profiles.")
_SERVE_ACCOUNT = typer.Option(None, help="Slurm: the project charged ($T0_SLURM_ACCOUNT).")
_SERVE_PARTITION = typer.Option(None, help="Slurm: the partition (default: the profile's).")
_SERVE_VENV = typer.Option(None, help="Slurm: the environment the job activates ($T0_VENV).")
_SERVE_SSH_HOST = typer.Option(None, help="Slurm: submit over SSH on this login node.")
_SERVE_SSH_USER = typer.Option(None, help="Slurm: the SSH user.")
_SERVE_SSH_KEY = typer.Option(None, help="Slurm: the SSH private key file.")


@app.command()
def serve(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    host: str = typer.Option(
        "127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."
    ),
    port: int = typer.Option(8080, help="TCP port."),
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="No API keys: a single user on this machine only."
    ),
    student: Optional[str] = _SERVE_STUDENT,
    servers: str = _SERVE_SERVERS,
    site: Optional[str] = _SERVE_SITE,
    profiles_dir: Optional[Path] = _SERVE_PROFILES_DIR,
    account: Optional[str] = _SERVE_ACCOUNT,
    partition: Optional[str] = _SERVE_PARTITION,
    venv: Optional[str] = _SERVE_VENV,
    ssh_host: Optional[str] = _SERVE_SSH_HOST,
    ssh_user: Optional[str] = _SERVE_SSH_USER,
    ssh_key: Optional[Path] = _SERVE_SSH_KEY,
    sets: Optional[list[str]] = SetOpt,
):
    """Serve the chat page (/), the JSON API (/docs) and /v1/chat/completions.

    Over the built index. Models with a serve section (by default a profile's student, from its
    final/, and its base as the agent) are started first, on this machine or as Slurm jobs, and
    stopped when the service stops (Ctrl-C, SIGTERM); roles without one are reached at their
    api_base. API keys are required unless --insecure-local.
    """
    # Before torch loads OpenMP: a query's encode is many short parallel regions with Python between
    # them, and OpenMP's default lets its worker sleep ~0.1 ms after each, so every region waited
    # for a wake-up (a search took ~2x as long in the service as alone). Spinning ~10x longer keeps
    # the worker for the whole encode.
    os.environ.setdefault("GOMP_SPINCOUNT", "3000000")
    if insecure_local and host not in ("127.0.0.1", "localhost", "::1"):
        raise T0Error(
            "--insecure-local only listens on this machine; drop it or use --host 127.0.0.1 (not "
            f"{host})."
        )
    if servers not in ("local", "slurm"):
        raise T0Error(f"--servers must be local or slurm, got {servers!r}.")
    if servers == "slurm" and not site:
        raise T0Error("--servers slurm needs --site (a site profile: t0 sbatch --help lists them).")
    check_listen(host, port)  # before any model server starts for nothing
    cfg, paths = setup(data_dir, config, sets=sets)
    if student is not None:
        flags = {f"serve.profiles.{name}.student": student for name in cfg.serve.profiles}
        cfg, paths = setup(data_dir, config, sets=sets, flags=flags)
    from t0_pipeline.defs.resources import ModelServer
    from t0_pipeline.serve.models import serving_models

    where = ModelServer(
        mode=servers,
        site=site,
        profiles_dir=str(profiles_dir) if profiles_dir else None,
        account=account or os.environ.get("T0_SLURM_ACCOUNT") or None,
        partition=partition,
        venv=venv,
        ssh_host=ssh_host,
        ssh_user=ssh_user,
        ssh_key_path=str(ssh_key) if ssh_key else None,
    )
    # a SIGTERM while the model servers start (or after) unwinds, so that they are stopped too
    signal.signal(signal.SIGTERM, _exit_on_term)
    factory = where.factory(cfg, paths, None, lambda line: typer.echo(line, err=True))
    with serving_models(cfg, paths, factory, local=servers == "local") as served:
        _run(served, paths, host, port, insecure_local)


def _exit_on_term(signum, frame) -> None:
    # a stop asked for (systemd, the scheduler, kill): unwind so the model servers stop, exit 0.
    # uvicorn handles it while serving, then raises it again here once it has shut down
    raise SystemExit(0)


def check_listen(host: str, port: int) -> None:
    """One error, before anything starts, for an address this process cannot listen on."""
    import errno
    import socket

    if not 1 <= port <= 65535:
        raise T0Error(f"--port must be between 1 and 65535, not {port}.")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise T0Error(
            f"--host {host!r} is not an address or a name this machine can resolve; use 127.0.0.1 "
            "(this machine only) or 0.0.0.0 (every interface)."
        ) from None
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise T0Error(
                    f"port {port} on {host} is already in use; pass --port with a free one."
                ) from None
            raise T0Error(
                f"cannot listen on {host}:{port} ({exc.strerror}); use an address of this machine "
                "(127.0.0.1, 0.0.0.0) and a port you may open (1024 and above without root)."
            ) from None


def _run(cfg, paths, host: str, port: int, insecure_local: bool) -> None:
    import uvicorn

    from t0_pipeline.serve.app import create_app

    app_ = create_app(cfg, paths, insecure_local=insecure_local)
    typer.echo(
        f"t0 serve: http://{host}:{port}/  (API docs /docs; "
        f"{'no API keys' if insecure_local else 'API keys required'})"
    )
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=False)


keys_app = typer.Typer(
    help="API keys for `t0 serve` (only a hash is stored; a key is shown once).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _store(data_dir: Optional[Path], config: Optional[Path], create: bool = True):
    """The key store; ``create=False``: None where the default SQLite file does not exist yet
    (listing or revoking keys never makes a database)."""
    from t0_pipeline.serve.store import Store, default_url

    cfg, paths = setup(data_dir, config)
    if not (create or cfg.serve.database_url or paths.conversations_db.exists()):
        return None
    return Store(cfg.serve.database_url or default_url(paths.conversations_db))


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
):
    """Create a key and print it (store it now: it cannot be shown again)."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise T0Error(
            "a key needs a name of 1 to 200 printable characters saying who or what it is for."
        )
    key_id, token = _store(data_dir, config).create_key(name)
    typer.echo(f"key id {key_id} ({name}):\n{token}")


@keys_app.command("list")
def keys_list(data_dir: Optional[Path] = DataDir, config: Optional[Path] = ConfigFile):
    """List keys (ids and names; never the keys)."""
    import datetime

    store = _store(data_dir, config, create=False)
    for k in store.list_keys() if store is not None else []:
        when = datetime.datetime.fromtimestamp(k["created_at"]).isoformat(timespec="seconds")
        typer.echo(f"{k['id']}  {k['name']}  created {when}{'  REVOKED' if k['revoked'] else ''}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id from `t0 keys list`."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
):
    """Revoke a key: its requests are refused from now on."""
    store = _store(data_dir, config, create=False)
    if store is None or not store.revoke_key(key_id):
        raise T0Error(f"no key with id {key_id}; see `t0 keys list`.")
    typer.echo(f"revoked {key_id}")
