"""Commands beyond the core ones in `meddenoise.cli`, each defined beside its library.

`meddenoise.cli` calls `register_commands` once; each package adds its commands here with one
line, so the core command module stays small (tests/test_structure.py) and a package's command
changes with its package.
"""

from __future__ import annotations

import typer

__all__ = ["register_commands"]


def register_commands(app: typer.Typer) -> None:
    """Add every command that lives outside `meddenoise.cli` to `app`."""
    from meddenoise.adapt.cli import register_adapt_commands
    from meddenoise.export.cli import register_export_commands
    from meddenoise.pacs.cli import register_pacs_commands
    from meddenoise.web.cli import register_web_commands

    register_adapt_commands(app)  # meddenoise adapt (fine-tune on the user's own noisy images)
    register_export_commands(app)  # meddenoise export (onnx, torch-export, monai-bundle)
    register_pacs_commands(app)  # meddenoise node, meddenoise node status, meddenoise dicomweb
    register_web_commands(app)  # meddenoise view, meddenoise serve
