"""``meddenoise adapt``: adapt a shipped model to the noise of the user's own noisy images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register_adapt_commands"]


def adapt_command(
    inputs: Annotated[
        list[Path], typer.Argument(help="Noisy images: files, folders, DICOM series folders.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The checkpoint to write (.safetensors).")
    ],
    base: Annotated[str, typer.Option(help="The shipped model to start from.")] = "grey",
    minutes: Annotated[
        float,
        typer.Option(
            help="Training budget in minutes; with --objective pd-n2n, 0 calibrates only."
        ),
    ] = 3.0,
    objective: Annotated[
        str,
        typer.Option(
            help="synthetic (the default: trained on noise with the covariance measured on "
            "your images), pd-n2n (pixel-shuffle calibration, self-supervised) or n2n."
        ),
    ] = "synthetic",
    pd_factor: Annotated[
        int | None, typer.Option(help="PD stride; default: measured from the noise.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Write the adapted weights even if the guard objects.")
    ] = False,
) -> None:
    """Adapt a shipped model to your scanner's noise, without clean images.

    Measures the noise on your images (how strong, how far it is correlated), trains the base
    network for --minutes on its own clean training images plus noise drawn with that
    correlation, and writes the adapted network only if, on a held-back fifth of your images, it
    removes no more anatomy and leaves a residual no less like the noise than the base model;
    otherwise it writes the base model's weights (exit code 3) and says why.  Use the result
    with ``meddenoise denoise ... --method MODEL.safetensors``.
    """
    from meddenoise.adapt import AdaptProgress, adapt

    def report(progress: AdaptProgress) -> None:
        typer.echo(
            f"step {progress.step}: loss {progress.loss:.3g}, {progress.remaining:.0f} s left",
            err=True,
        )

    try:
        result = adapt(
            inputs,
            output,
            base=base,
            minutes=minutes,
            objective=objective,
            pd_factor=pd_factor,
            seed=seed,
            force=force,
            progress=report,
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{result.card['verdict']}")
    typer.echo(f"written: {result.output} ({result.kept} weights), card: {result.card_path}")
    if result.kept == "base":
        raise typer.Exit(code=3)


def register_adapt_commands(app: typer.Typer) -> None:
    """Add ``meddenoise adapt`` to `app`."""
    app.command("adapt")(adapt_command)
