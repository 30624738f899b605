"""Write the model card of a checkpoint: what it was trained on, how, and how well it does.

    .venv/bin/python scripts/write_model_card.py runs/default/best.safetensors \
        --name default --benchmark bench/benchmark.csv --out src/meddenoise/weights/default.md

Everything comes from the checkpoint's metadata (config, seed, commit, epoch, wall time,
validation metrics) and, when given, a benchmark CSV of test-split results for this checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from meddenoise.checkpoint import read_metadata

LICENCES = {
    "pydicom": "pydicom / pydicom-data test files (MIT licence)",
    "skimage": "scikit-image sample images (BSD-3 licence; see skimage.data docs for each)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--benchmark", type=Path, help="benchmark CSV with this checkpoint's rows")
    parser.add_argument("--method", help="method label of this checkpoint in the CSV")
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    metadata = read_metadata(arguments.checkpoint)
    config = metadata.get("config", {})
    data = config.get("data", {})
    sources = sorted({entry.split(":", 1)[0] for entry in data.get("train", []) if ":" in entry})
    lines = [
        f"# Model card: `{arguments.name}`",
        "",
        f"- Network: `{metadata['model']}`, arguments `{json.dumps(metadata.get('arguments'))}`",
        f"- Purpose: {config.get('description', '')}",
        f"- Trained from commit `{metadata.get('commit')}`, seed {metadata.get('seed')}, "
        f"{metadata.get('epoch')} epochs of {data.get('patches_per_epoch')} patches of "
        f"{data.get('patch_size')}², batch {config.get('batch_size')}, "
        f"wall time {float(metadata.get('wall_seconds', 0)) / 3600:.2f} h on a 2-core CPU",
        f"- Reproduce: `meddenoise train configs/{arguments.name}.yaml`",
        "",
        "## Data",
        "",
        "Training: " + ", ".join(f"`{entry}`" for entry in data.get("train", [])),
        "",
        "Validation (held back): " + ", ".join(f"`{entry}`" for entry in data.get("val", [])),
        "",
        "Licences: " + "; ".join(LICENCES.get(source, source) for source in sources),
        "",
        "Never used to train, tune or select: the test split (`RG1_*`, `693_*`, `MR2_*`, "
        "`explicit_VR-UN.dcm`, `skimage.data.retina()`, `skimage.data.immunohistochemistry()`).",
        "",
        "## Noise",
        "",
        f"`{json.dumps(config.get('noise'))}`",
        "",
        "## Validation metrics (last recorded epoch)",
        "",
        f"`{json.dumps(metadata.get('metrics'))}`",
        "",
    ]
    if arguments.benchmark is not None:
        with open(arguments.benchmark, encoding="utf-8") as handle:
            rows = [
                row
                for row in csv.DictReader(handle)
                if row["method"] == (arguments.method or str(arguments.checkpoint))
            ]
        lines += [
            "## Test split (benchmark protocol, blind)",
            "",
            "| image | noise | noisy PSNR | PSNR | SSIM |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['image']} | {row['noise']} | {float(row['noisy_psnr']):.2f} | "
            f"{float(row['psnr']):.2f} | {float(row['ssim']):.4f} |"
            for row in rows
        ]
        lines.append("")
    arguments.out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
