"""Ship a checkpoint as a pretrained model: weights into the package plus its model card.

    .venv/bin/python scripts/ship_model.py runs/default/best.safetensors --name default \
        --precision bf16 --validation "validation text" [--benchmark bench/benchmark.csv]

Writes src/meddenoise/weights/NAME.safetensors (the same weights, with the inference precision
recorded: bf16 only where validation showed it costs < 0.02 dB) and NAME.md, the model card.
Everything in the card comes from the checkpoint's metadata (config, seed, commit, epoch, wall
time, validation metrics) and, when given, a benchmark CSV of test-split results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from meddenoise.checkpoint import read_metadata
from meddenoise.io.base import atomic_output, atomic_write_with

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "meddenoise" / "weights"

LICENCES = {
    "pydicom": "pydicom / pydicom-data test files (MIT licence)",
    "skimage": "scikit-image sample images (BSD-3 licence; see skimage.data docs for each)",
    "matplotlib": "matplotlib sample data: grace_hopper.jpg, a U.S. Navy photograph in the "
    "public domain",
}


@contextlib.contextmanager
def safe_metadata(path: Path) -> Iterator[dict[str, str]]:
    """The raw (string) safetensors metadata of `path`, to extend before re-saving."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        yield dict(handle.metadata() or {})


def _same_weights(path: Path, state: dict[str, Any], metadata: dict[str, str]) -> bool:
    """Whether `path` already holds exactly these tensors and this metadata."""
    if not path.is_file():
        return False
    with safe_metadata(path) as existing:
        if existing != metadata:
            return False
    shipped = load_file(str(path))
    return shipped.keys() == state.keys() and all(
        shipped[name].dtype == state[name].dtype and torch.equal(shipped[name], state[name])
        for name in state
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--benchmark", type=Path, help="benchmark CSV with this checkpoint's rows")
    parser.add_argument("--method", help="method label of this checkpoint in the CSV")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--validation", default="", help="validation evidence (Markdown)")
    arguments = parser.parse_args()
    metadata = read_metadata(arguments.checkpoint)
    with safe_metadata(arguments.checkpoint) as raw:
        raw["inference_precision"] = arguments.precision
        state = load_file(str(arguments.checkpoint))
        target = WEIGHTS / f"{arguments.name}.safetensors"
        # safetensors writes metadata in no fixed key order: rewriting the same weights would
        # give git a new 16 MB blob when only the card changes.
        if not _same_weights(target, state, raw):
            atomic_write_with(
                target, lambda temporary: save_file(state, str(temporary), metadata=raw)
            )
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
        f"- Reproduce: `meddenoise train` with the config(s) named under Validation below "
        f"(`configs/{arguments.name}*.yaml`)",
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
        "## Validation",
        "",
        f"Training log of the shipped epoch: `{json.dumps(metadata.get('metrics'))}`",
        "",
        arguments.validation,
        "",
        f"Inference precision: {arguments.precision}.",
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
    with atomic_output(WEIGHTS / f"{arguments.name}.md") as handle:
        handle.write("\n".join(lines).encode("utf-8"))


if __name__ == "__main__":
    main()
