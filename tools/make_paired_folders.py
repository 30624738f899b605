"""Build a paired low/high dataset in the layout of the low-dose X-ray reference:

    ROOT/{train,val,test}/{low,high}/NAME

`high` is a byte copy of each clean image (in its own format), `low` a simulated noisy copy in
the same format, made by the same library calls as `meddenoise simulate` (Poisson-Gaussian by
default: X-ray quantum noise plus detector read noise).  Images may be files or packaged names
(pydicom:NAME).  Each split gets its own images; noise levels are in 0-255 units of the mapped
range, as on the command line.

    .venv/bin/python tools/make_paired_folders.py ROOT --train pydicom:RG3_UNCR.dcm \
        pydicom:CT_small.dcm --val pydicom:bad_sequence.dcm --photons 300 --read-noise 2.55
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from meddenoise.data import packaged_image
from meddenoise.io import image_properties, read_image, write_image
from meddenoise.noise import INTENSITY_PARAMETERS, fit_to_image, make_noise, noise_parameters
from meddenoise.pipeline import transform_image


def source_file(entry: str) -> Path:
    found = packaged_image(entry)
    if isinstance(found, np.ndarray):
        raise SystemExit(f"{entry}: an in-memory sample has no file to pair; give a file")
    path = found if found is not None else Path(entry)
    if not path.is_file():
        raise SystemExit(f"{entry}: no such file")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("root", type=Path)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", nargs="*", default=[], help=f"images for {split}/")
    parser.add_argument("--noise", default="poisson-gaussian")
    parser.add_argument("--photons", type=float, default=300.0)
    parser.add_argument("--read-noise", type=float, default=2.55, help="0-255 units")
    parser.add_argument("--sigma", type=float, default=25.0, help="0-255 units")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    given = {
        "photons": arguments.photons,
        "read_noise": arguments.read_noise,
        "sigma": arguments.sigma,
    }
    accepted = noise_parameters(arguments.noise)
    parameters = {
        name: value / 255.0 if name in INTENSITY_PARAMETERS else value
        for name, value in given.items()
        if name in accepted
    }
    model = make_noise(arguments.noise, **parameters)
    for split in ("train", "val", "test"):
        for index, entry in enumerate(getattr(arguments, split)):
            source = source_file(entry)
            high = arguments.root / split / "high" / source.name
            high.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, high)
            clean = read_image(source)
            fitted = fit_to_image(model, image_properties(clean))
            generator = np.random.default_rng(arguments.seed + index)
            noisy = transform_image(
                clean,
                lambda unit: fitted(unit, generator),  # noqa: B023 - used at once
                method="simulated noise",
                parameters={"noise": arguments.noise, "seed": arguments.seed + index},
            )
            write_image(noisy, arguments.root / split / "low" / source.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
