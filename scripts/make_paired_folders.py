"""Build a paired low/high dataset in the layout of the low-dose X-ray reference:

    ROOT/{train,val,test}/{low,high}/NAME

`high` is a copy of each clean image (in its own format), `low` a simulated low-dose copy made by
`meddenoise simulate` (Poisson-Gaussian by default: X-ray quantum noise plus detector read noise).
Images may be files or packaged names (pydicom:NAME).  Each split gets its own images.

    python scripts/make_paired_folders.py ROOT --train pydicom:RG3_UNCR.dcm pydicom:CT_small.dcm \
        --val pydicom:bad_sequence.dcm --photons 300 --read-noise 0.01
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def resolve(entry: str) -> Path:
    if entry.startswith("pydicom:"):
        from pydicom.data import get_testdata_file

        found = get_testdata_file(entry.split(":", 1)[1], download=False)
        if found is None:
            raise SystemExit(f"{entry}: not installed (pip install pydicom-data)")
        return Path(found)
    return Path(entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("root", type=Path)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", nargs="*", default=[], help=f"images for {split}/")
    parser.add_argument("--noise", default="poisson-gaussian")
    parser.add_argument("--photons", type=float, default=300.0)
    parser.add_argument("--read-noise", type=float, default=0.01)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    command = [sys.executable, "-m", "meddenoise.cli", "simulate"]
    for split in ("train", "val", "test"):
        for index, entry in enumerate(getattr(arguments, split)):
            source = resolve(entry)
            for folder in ("low", "high"):
                (arguments.root / split / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, arguments.root / split / "high" / source.name)
            options = ["--noise", arguments.noise, "--seed", str(arguments.seed + index)]
            if arguments.noise == "poisson-gaussian":
                options += [
                    "--photons",
                    str(arguments.photons),
                    "--read-noise",
                    str(arguments.read_noise),
                ]
            else:
                options += ["--sigma", str(arguments.sigma)]
            subprocess.run(
                [
                    *command,
                    str(source),
                    "-o",
                    str(arguments.root / split / "low" / source.name),
                    *options,
                ],
                check=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
