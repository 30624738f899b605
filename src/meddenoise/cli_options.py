"""Command-line options more than one command takes: one definition each, one help text.

`meddenoise.cli` and the commands of other packages (`meddenoise.web.cli`) import them, so an
option reads the same in every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LEVEL_UNITS = "in 0-255 units of the mapped range (25 means 25/255)"

MaxPixels = Annotated[int, typer.Option(help="Refuse images with more pixels than this.")]
Window = Annotated[
    str | None, typer.Option(help="Map CENTER,WIDTH (modality units, e.g. 40,400 HU) to [0, 1].")
]
Sigma = Annotated[float | None, typer.Option(help=f"Noise std {LEVEL_UNITS}.")]
Photons = Annotated[float | None, typer.Option(help="X-ray noise: photons at full scale.")]
ReadNoise = Annotated[float | None, typer.Option(help=f"Read-noise std {LEVEL_UNITS}.")]
Strength = Annotated[
    float,
    typer.Option(help="Keep this part of the change, 0-1: input + s x (denoised - input)."),
]
NoiseMap = Annotated[
    Path | None,
    typer.Option(help="Also write each image's noise level map (float32 TIFF) under this folder."),
]
Dask = Annotated[
    str | None,
    typer.Option(
        help="Run on Dask: local:N (N local worker processes) or a scheduler address; resumes."
    ),
]
