"""The ``t0`` command line: one command per pipeline stage, from crawling to evaluation.

Each command reads defaults from :mod:`t0_pipeline.config`, an optional ``--config``
file (JSON/YAML/TOML with any subset of fields), ``T0_<SECTION>__<FIELD>`` variables, then
the command line: ``--set section.field=value`` (any setting, repeatable) and the command's
own flags, which are shorthands for settings (``t0 index --chunk-size 128`` is
``--set chunk.size=128``) and go through the same validation. Problems the user can fix
print one line and exit with status 2; nothing already produced is touched.
"""

from __future__ import annotations

import os
import sys

import typer

from t0_pipeline.artifacts import T0Error

# the commands register in this order, which `t0 --help` lists them in: the pipeline's order
# isort: off
from t0_pipeline.cli import corpus, models, cluster, serving, pipeline  # noqa: F401

# isort: on
from t0_pipeline.cli.common import app


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    from typer import _click as click  # typer carries its own click
    from typer import exceptions as typer_exits

    try:
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode ends
    except typer_exits.Abort:
        typer.secho("aborted", fg="red", err=True)
        sys.exit(130)
    except typer_exits.Exit as done:  # --help, and commands that stop early on purpose
        sys.exit(getattr(done, "exit_code", 0) or 0)
    except click.exceptions.NoArgsIsHelpError as exc:  # `t0 keys`: the help, as asked
        typer.echo(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        sys.exit(0)
    except click.exceptions.UsageError as exc:  # an unknown option, a missing or mistyped value
        command = exc.ctx.command_path if exc.ctx is not None else "t0"
        typer.secho(f"error: {exc.format_message()} (see `{command} --help`)", fg="red", err=True)
        sys.exit(2)
    except click.exceptions.ClickException as exc:
        typer.secho(f"error: {exc.format_message()}", fg="red", err=True)
        sys.exit(2)
    except T0Error as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except OSError as exc:  # files and folders: name the path and the problem
        if os.environ.get("T0_TRACEBACK"):
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.secho(
            f"error:{where}: {exc.strerror or exc}; check the path and its permissions.",
            fg="red",
            err=True,
        )
        sys.exit(2)
    # anything else is still one line; T0_TRACEBACK=1 shows where it came from
    except Exception as exc:
        if os.environ.get("T0_TRACEBACK"):
            raise
        typer.secho(
            f"error: unexpected {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''} (set T0_TRACEBACK=1 for the "
            "traceback, and please report it)",
            fg="red",
            err=True,
        )
        sys.exit(1)


def run_stage(command: str) -> None:
    """``python -m t0_pipeline.<former module path> [options]`` runs ``t0 <command> [options]`` (the
    shims in ``t0_pipeline/former_paths/``, for scripts written before the stage packages)."""
    main([command, *sys.argv[1:]], prog_name="python -m t0_pipeline")
