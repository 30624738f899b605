"""Ship a checkpoint as a pretrained model: weights into the package plus its model card.

    .venv/bin/python tools/ship_model.py runs/default/best.safetensors --name grey \
        --bf16-cost 0.009 --validation "validation text" [--benchmark bench/benchmark.csv]

Writes src/meddenoise/weights/NAME.safetensors (the same weights) and NAME.md, the model card.
The card records which precisions were validated and what bf16 cost on validation
(`tools/validate_checkpoint.py`); it does not choose one: the machine does at run time (bf16
only where the CPU or GPU runs it natively, `meddenoise.inference.resolve_precision`).
Everything in the card comes from the checkpoint's metadata (config, seed, commit and tree state
at run start, epoch, wall time, validation metrics) and, when given, a benchmark CSV of
test-split results.

Refuses to ship (exit status 1, nothing written) unless `meddenoise.splits.verify_checkpoint`
walks the whole ``init`` chain to a model trained from scratch and finds no test-split entry in
any model's data and no validation image in the training data of its model or an ancestor, and
unless a config in configs/ matches the card's reproduce hint.  The card states what was checked.
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
from meddenoise.splits import TEST_SPLIT, Link, ProvenanceError, verify_checkpoint

REPOSITORY = Path(__file__).resolve().parents[1]
WEIGHTS = REPOSITORY / "src" / "meddenoise" / "weights"

LICENCES = {
    "pydicom": "pydicom / pydicom-data test files (MIT licence)",
    "skimage": "scikit-image sample images (BSD-3 licence; see skimage.data docs for each)",
    "matplotlib": "matplotlib sample data: grace_hopper.jpg, a U.S. Navy photograph in the "
    "public domain",
    "dipy": "dipy's bundled data files (dipy/data/files; dipy is under the BSD-3 licence)",
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


# Shipped models whose configs carry another name: the grey model's chain is configs/default*.
CONFIG_STEMS = {"grey": "default"}


def reproduce_pattern(name: str) -> str:
    """The configs that rebuild model `name`, as a glob from the repository root: model names
    use hyphens (ct-lowdose), config files underscores (configs/ct_lowdose*.yaml)."""
    return f"configs/{CONFIG_STEMS.get(name, name).replace('-', '_')}*.yaml"


def commit_text(metadata: dict[str, Any]) -> str:
    """Which source the weights come from, as far as the checkpoint recorded it."""
    commit = metadata.get("commit")
    sessions = metadata.get("sessions")
    if not sessions:  # written before runs recorded their start
        return (
            f"commit `{commit}` (when the checkpoint was saved, not when the run started; "
            "whether the tree had uncommitted changes was not recorded)"
        )
    tree = {True: "with uncommitted changes", False: "clean", None: "state not recorded"}
    text = f"commit `{commit}` at run start (tree {tree[metadata.get('dirty')]})"
    for session in sessions[1:]:
        text += (
            f", resumed at epoch {session['first_epoch']} from commit `{session['commit']}` "
            f"(tree {tree[session.get('dirty')]})"
        )
    return text


def verification_text(links: list[Link]) -> str:
    """What `verify_checkpoint` checked, for the card: no more than that."""
    chain = " <- ".join(f"`{link.name}`" for link in links[1:]) or "none: trained from scratch"
    return (
        "Checked when shipped (`meddenoise.splits.verify_checkpoint`), on the data lists of this "
        f"model's config and of the configs of its {len(links) - 1} ancestor(s) in the init chain "
        f"({chain}): none lists an image of the test split ("
        + ", ".join(f"`{entry}`" for entry in TEST_SPLIT)
        + "), and no model's validation images are in its own training data or in that of any "
        "of its ancestors. Images are compared by entry name and file path, not by pixel content."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--benchmark", type=Path, help="benchmark CSV with this checkpoint's rows")
    parser.add_argument("--method", help="method label of this checkpoint in the CSV")
    parser.add_argument(
        "--bf16-cost", type=float, help="validation dB lost in bf16 against fp32, if measured"
    )
    parser.add_argument("--validation", default="", help="validation evidence (Markdown)")
    arguments = parser.parse_args()
    metadata = read_metadata(arguments.checkpoint)
    # Checked before anything is written: a refused model leaves the shipped files alone.
    try:
        links = verify_checkpoint(arguments.checkpoint)
    except ProvenanceError as error:
        parser.exit(1, f"ship_model: refusing to ship {arguments.name}: {error}\n")
    pattern = reproduce_pattern(arguments.name)
    if not sorted(REPOSITORY.glob(pattern)):
        parser.exit(
            1,
            f"ship_model: no config matches {pattern}: the card could not say how to "
            "rebuild the model\n",
        )
    with safe_metadata(arguments.checkpoint) as raw:
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
        f"- Trained from {commit_text(metadata)}, seed {metadata.get('seed')}, "
        f"{metadata.get('epoch')} epochs of {data.get('patches_per_epoch')} patches of "
        f"{data.get('patch_size')}², batch {config.get('batch_size')}, "
        f"wall time {float(metadata.get('wall_seconds', 0)) / 3600:.2f} h on a 2-core CPU",
        f"- Reproduce: `meddenoise train` with the config(s) named under Validation below "
        f"(`{pattern}`)",
        "",
        "## Data",
        "",
        "Training: " + ", ".join(f"`{entry}`" for entry in data.get("train", [])),
        "",
        "Validation (held back): " + ", ".join(f"`{entry}`" for entry in data.get("val", [])),
        "",
        "Licences: " + "; ".join(LICENCES.get(source, source) for source in sources),
        "",
        verification_text(links),
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
        "Precision: validated in fp32"
        + (
            f" and bf16 (bf16 cost {arguments.bf16_cost:.3f} dB on validation)"
            if arguments.bf16_cost is not None
            else " only"
        )
        + "; chosen at run time (`--precision auto`: bf16 only on CPUs with AVX512-BF16 or AMX "
        "and on GPUs with bf16, fp32 elsewhere).",
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
