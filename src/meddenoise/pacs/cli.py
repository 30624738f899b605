"""`meddenoise node` (run a DICOM node) and `meddenoise node status` (its queue and series)."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Annotated

import typer

node_app = typer.Typer(
    help="A DICOM node: receive series (C-STORE), denoise each, send the derived series on.",
    no_args_is_help=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Node configuration (YAML; see docs/deployment.md).")
]


@node_app.callback(invoke_without_command=True)
def node(
    context: typer.Context,
    config_path: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Node configuration (YAML; see docs/deployment.md)."),
    ] = None,
) -> None:
    """Run the node until interrupted (Ctrl-C or SIGTERM)."""
    if context.invoked_subcommand is not None:
        return
    if config_path is None:
        typer.echo("error: --config NODE.yaml is required", err=True)
        raise typer.Exit(code=2)
    from meddenoise.pacs.config import load_node_config
    from meddenoise.pacs.node import Node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_node_config(config_path)
        server = Node(config)
        server.check_method()
    except (ValueError, ImportError, OSError) as error:  # ConfigError is a ValueError
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    server.serve_forever()


def _when(seconds: float) -> str:
    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


@node_app.command()
def status(config_path: ConfigOption) -> None:
    """The node's queue: series per state, then one line per series (newest first)."""
    from meddenoise.pacs.config import load_node_config
    from meddenoise.pacs.spool import Spool

    try:
        config = load_node_config(config_path)
    except ValueError as error:  # ConfigError
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    if not (config.spool / "state.sqlite").is_file():
        typer.echo(f"error: no node state in {config.spool} (has the node run?)", err=True)
        raise typer.Exit(code=1)
    spool = Spool(config.spool)
    try:
        counts = spool.counts()
        typer.echo("  ".join(f"{state}: {count}" for state, count in counts.items()))
        for record in spool.series():
            line = (
                f"{record.state:10s} {record.uid}  instances {record.instances}"
                f"  derived {record.derived_instances}  attempts {record.attempts}"
                f"  last received {_when(record.last_received)}"
            )
            if record.state == "sending" and record.next_attempt:
                line += f"  next try {_when(record.next_attempt)}"
            if record.reason:
                line += f"  reason: {record.reason}"
            typer.echo(line)
    finally:
        spool.close()


def register_pacs_commands(app: typer.Typer) -> None:
    """Add `node` (with `node status`) and `dicomweb` to the `meddenoise` command."""
    from meddenoise.pacs.dicomweb_cli import dicomweb

    app.add_typer(node_app, name="node")
    app.command()(dicomweb)
