"""`meddenoise adapt` on a real DICOM series, as a user would run it (docs/adapt.md).

The series is pydicom-data's ``eCT_Supplemental.dcm``: a real enhanced-CT brain series, two
512 x 512 slices in one multi-frame file, with its scanner's own noise (correlated by the
reconstruction kernel: 0.78 at lag 1, 0.48 at lag 2).  There is no clean image, so the figures
are the guard's and `meddenoise evaluate --no-reference`'s (structure in the residual), and the
pictures.  (``emri_small.dcm``, a real MR series with visible noise, has 64 x 64 slices: too
small for `adapt`, which refuses images under 128 px.)

    python examples/adapt/worked_example.py OUTPUT_FOLDER [PYDICOM_DATA_FILE]

writes OUTPUT_FOLDER/series (the input), model.safetensors and model.md (what `adapt` wrote and
its card), denoised/{grey,adapted}/ (DICOM, the input's format), evaluate.json and adapt.png;
when the guard keeps the base model, also candidate.safetensors (`adapt --force`: what the guard
refused) and denoised/candidate/.  It never writes into pydicom-data's folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

SERIES = "eCT_Supplemental.dcm"


def meddenoise(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would; exit code 3 (guard kept the base) is a result."""
    command = [sys.executable, "-m", "meddenoise", *arguments]
    print("$ meddenoise " + " ".join(arguments), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 3):
        raise SystemExit(f"meddenoise {arguments[0]} failed:\n{result.stderr}")
    print(result.stdout.strip(), flush=True)
    return result


def main(folder: Path, name: str = SERIES) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pydicom.data import get_testdata_file

    from meddenoise.io import read_image

    series = folder / "series"
    series.mkdir(parents=True, exist_ok=True)
    source = get_testdata_file(name, download=False)
    if source is None:
        raise SystemExit("pydicom-data is not installed (pip install pydicom-data)")
    shutil.copy(source, series / name)
    model = folder / "model.safetensors"
    methods = {"grey": "grey", "adapted": str(model)}
    if meddenoise("adapt", str(series), "-o", str(model)).returncode == 3:
        candidate = folder / "candidate.safetensors"
        meddenoise("adapt", str(series), "-o", str(candidate), "--force")
        methods["candidate"] = str(candidate)
    outputs = {}
    for label, method in methods.items():
        target = folder / "denoised" / label
        if target.exists():
            shutil.rmtree(target)
        meddenoise("denoise", str(series), "-o", str(target), "--method", method)
        outputs[label] = target / name
    scores = {}
    for label, path in outputs.items():
        result = meddenoise(
            "evaluate", "--reference", str(series / name), "--test", str(path),
            "--no-reference", "--json",
        )  # fmt: skip
        scores[label] = json.loads(result.stdout)
    (folder / "evaluate.json").write_text(json.dumps(scores, indent=2) + "\n")

    noisy = np.asarray(read_image(series / name).array, dtype=np.float64)
    denoised = {label: np.asarray(read_image(path).array, dtype=np.float64)
                for label, path in outputs.items()}  # fmt: skip
    if noisy.ndim == 2:  # one image: a series of one
        noisy, denoised = noisy[None], {label: array[None] for label, array in denoised.items()}
    index = noisy.shape[0] // 2
    # A soft-tissue window: the 2nd to 98th percentiles of the pixels in the brighter half of
    # the value range (the body, not air or padding).
    plane = noisy[index]
    body = plane[plane > (plane.min() + plane.max()) / 2]
    low, high = np.percentile(body, [2, 98])
    shown = "candidate" if "candidate" in denoised else "adapted"
    spread = max(float(np.std(noisy[index] - denoised[shown][index])) * 3, 1.0)
    figure, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    panels = [
        (noisy[index], "input (its own noise)", (low, high)),
        (denoised["grey"][index], "grey model (blind)", (low, high)),
        (denoised[shown][index], f"{shown} (synthetic objective, 3 min)", (low, high)),
        (None, "", None),
        (noisy[index] - denoised["grey"][index], "residual: grey", (-spread, spread)),
        (noisy[index] - denoised[shown][index], f"residual: {shown}", (-spread, spread)),
    ]
    for axis, (image, title, window) in zip(axes.flat, panels, strict=True):
        axis.axis("off")
        if image is None:
            continue
        axis.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
        axis.set_title(title, fontsize=9)
    card = (folder / "model.md").read_text().split("```json")[0]
    note = (
        f"{name}\nslice {index + 1} of {noisy.shape[0]}\nresiduals at +/-{spread:.0f} stored units"
    )
    if shown == "candidate":
        note += "\n\nthe guard kept the base model;\nthe candidate is what it refused"
    axes.flat[3].text(0.0, 0.5, note, fontsize=8, va="center")
    figure.tight_layout()
    figure.savefig(folder / "adapt.png", dpi=90)
    print(card)
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), *sys.argv[2:])
