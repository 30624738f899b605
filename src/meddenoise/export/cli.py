"""``meddenoise export`` and the ``--backend`` option of ``meddenoise denoise``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["Backend", "register_export_commands"]

Backend = Annotated[
    str,
    typer.Option(help="Networks: torch, or onnxruntime (their ONNX export; fp32, extra 'export')."),
]
EXTRA_HINT = "pip install 'meddenoise[export]'"


def export(
    model: Annotated[
        str, typer.Argument(help="A shipped model (grey, rgb, ct-lowdose) or checkpoint.")
    ],
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx, torch-export or monai-bundle.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The .onnx or .pt2 file, or the bundle folder.")
    ],
) -> None:
    """Export a network for ONNX Runtime, torch.export (C++, Triton) or MONAI.

    Conditioned networks (the shipped models) take the noise map as a second input; the JSON
    written beside a file (or the bundle's metadata) says so.  TorchScript is deprecated: use
    torch-export.
    """
    from meddenoise.export import export_model

    try:
        written = export_model(model, format, output)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    except ImportError as error:  # onnx, onnxscript or onnxruntime missing
        typer.echo(f"error: {error.name or error} is not installed ({EXTRA_HINT})", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"written: {written}")


def register_export_commands(app: typer.Typer) -> None:
    """Add ``meddenoise export`` to `app`."""
    app.command()(export)
