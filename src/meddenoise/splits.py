"""The test split, and the checks that keep it, and every validation set, clean.

`TEST_SPLIT` holds the images the benchmark reports on (`meddenoise.benchmark.TEST_IMAGES`) in
every form the installed packages ship them: pydicom-data stores each test radiograph, CT and MR
in four transfer syntaxes (uncompressed and JPEG 2000, each reversible and irreversible), and a
network that trained on one of them has seen the others.  Held-out sets added later belong here.

Three checks use it (and `start_record` records what `fit` checked in every checkpoint):

- config loading (`meddenoise.config`) refuses a training or validation entry in the test split;
- `fit` refuses to start when its validation set is in the training data of a model in its
  ``init`` chain (model selection on images the starting weights learnt);
- `tools/ship_model.py` refuses to ship unless `lineage_problems` finds nothing in the whole
  chain: no test-split entry anywhere, and every model's validation set disjoint from its own
  training data and from that of every ancestor.

Entries are compared by *key*: ``pydicom:NAME``, ``skimage:NAME``, ``matplotlib:NAME``,
``nibabel:PATH`` and ``nilearn:PATH`` as written; a file path by its resolved path, except that a
file named like a pydicom or held-out MR test-split file counts as that file wherever it lies (a
copy is the same image); folders and glob patterns by the files they hold.

The held-out MR set (issue 13, docs/heldout.md) is part of the test split: never trained on,
tuned on or used to select a model.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddenoise.config import ConfigError

TEST_SPLIT: tuple[str, ...] = (
    # CR chest (benchmark "CR chest"), in its four transfer syntaxes.
    "pydicom:RG1_UNCR.dcm",
    "pydicom:RG1_UNCI.dcm",
    "pydicom:RG1_J2KR.dcm",
    "pydicom:RG1_J2KI.dcm",
    # CT head ("CT head"); 693_J2KI.dcm ships with pydicom itself, the others with pydicom-data.
    "pydicom:693_UNCR.dcm",
    "pydicom:693_UNCI.dcm",
    "pydicom:693_J2KR.dcm",
    "pydicom:693_J2KI.dcm",
    # MR shoulder ("MR shoulder").
    "pydicom:MR2_UNCR.dcm",
    "pydicom:MR2_UNCI.dcm",
    "pydicom:MR2_J2KR.dcm",
    "pydicom:MR2_J2KI.dcm",
    # CT abdomen ("CT abdomen"): no other pydicom file holds this slice.
    "pydicom:explicit_VR-UN.dcm",
    # Colour: fundus and histology.
    "skimage:retina",
    "skimage:immunohistochemistry",
    # The held-out MR set (issue 13; docs/heldout.md, `meddenoise.benchmark.HELDOUT_MR`): whole
    # files, so every slice of a volume is held out with the slices the benchmark scores.
    "matplotlib:s1045.ima.gz",  # head and neck, sagittal T1-weighted
    "nibabel:tests/data/example4d.nii.gz",  # brain, axial gradient-echo EPI (BOLD)
    "nibabel:nicom/tests/data/slicethickness_empty_string.dcm",  # neck, TOF MR angiogram MIP
    # brain, T1-weighted ICBM 2009a template (an average of 152 brains)
    "nilearn:datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
)

# scikit-image's files behind its test-split loaders, for entries that give the file's path.
SKIMAGE_FILES = {"retina.jpg": "skimage:retina", "ihc.png": "skimage:immunohistochemistry"}
# The held-out MR files by name: a copy anywhere (these names are specific enough) is the image.
HELDOUT_FILES = {
    entry.split(":", 1)[1].rsplit("/", 1)[-1]: entry
    for entry in TEST_SPLIT
    if entry.startswith(("matplotlib:", "nibabel:", "nilearn:"))
}
# Packages whose installed files a data entry can name as ``PACKAGE:PATH``
# (`meddenoise.data.packaged_image` reads them).
PACKAGE_FILE_PREFIXES = ("nibabel", "nilearn", "dipy")
PACKAGED_PREFIXES = (
    "pydicom:",
    "skimage:",
    "matplotlib:",
    *(f"{package}:" for package in PACKAGE_FILE_PREFIXES),
)
logger = logging.getLogger(__name__)


class ProvenanceError(ConfigError):
    """Data or an ``init`` chain that breaks the split rules; the message names the entry.  A
    `ConfigError`: what to change is the config's data lists or its ``init``."""


def entry_keys(entry: str) -> list[str]:
    """The keys of the images a data entry names: one for a packaged image or a file, one per
    file for a folder or a glob pattern.  A path that does not exist keeps its own key."""
    if entry.startswith(PACKAGED_PREFIXES):
        return [entry]
    path = Path(entry).expanduser()
    if path.is_dir():
        files = sorted(candidate for candidate in path.rglob("*") if candidate.is_file())
    elif not path.exists() and any(character in entry for character in "*?["):
        files = sorted(Path(match) for match in glob.glob(entry) if Path(match).is_file())
    else:
        files = [path]
    return [file_key(file) for file in files]


def file_key(path: Path) -> str:
    """The key of one file: its test-split name when it is a copy of a test-split file, else its
    resolved path."""
    pydicom_key = f"pydicom:{path.name}"
    if pydicom_key in TEST_SPLIT:
        return pydicom_key
    if path.name in SKIMAGE_FILES and "skimage" in path.resolve().parts:
        return SKIMAGE_FILES[path.name]
    if path.name in HELDOUT_FILES:
        return HELDOUT_FILES[path.name]
    return str(path.resolve())


def members_of_test_split(entry: str) -> list[str]:
    """The test-split images that `entry` names or (a folder, a pattern) holds, as keys."""
    return sorted({key for key in entry_keys(entry) if key in TEST_SPLIT})


def in_test_split(entry: str) -> bool:
    """Whether `entry` (``pydicom:693_J2KR.dcm``, ``skimage:retina``, a path to such a file, a
    folder holding one) names an image of the test split."""
    return bool(members_of_test_split(entry))


def shared_images(first: Iterable[str], second: Iterable[str]) -> list[str]:
    """The image keys that both lists of data entries name, sorted."""
    first_keys = {key for entry in first for key in entry_keys(entry)}
    return sorted(first_keys & {key for entry in second for key in entry_keys(entry)})


def check_disjoint(validation: Iterable[str], training: Iterable[str], what: str) -> None:
    """Raise `ProvenanceError` when a validation entry is also in `training` (`what` names
    whose training data that is, for the message)."""
    shared = shared_images(validation, training)
    if shared:
        raise ProvenanceError(
            f"validation image(s) {', '.join(shared)} are also in the training data of {what}"
        )


def data_entries(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(training, validation) entries of a config dict (as stored in checkpoint metadata); in
    paired mode the root's train/ and val/ folders."""
    data = config.get("data") or {}
    if data.get("mode") == "paired" and data.get("root"):
        root = Path(data["root"])
        return [str(root / "train")], [str(root / "val")]
    return list(data.get("train") or []), list(data.get("val") or [])


@dataclass(frozen=True)
class Link:
    """One model of an ``init`` chain: how it was named, and its training config."""

    name: str  # the checkpoint path or shipped name that the child's `init` gave, or "this run"
    config: dict[str, Any]
    commit: str | None = None


@dataclass
class Lineage:
    """The ancestors of a model, nearest first, and why the walk stopped early (None: it
    reached a model trained from scratch)."""

    ancestors: list[Link] = field(default_factory=list)
    unresolved: str | None = None


def resolve_init(source: str) -> Path | None:
    """The weights file an ``init`` value names: a shipped model name or a checkpoint path."""
    from meddenoise.methods import SHIPPED_MODELS, shipped_weights

    if source in SHIPPED_MODELS:
        return shipped_weights(source)
    path = Path(source)
    return path if path.is_file() else None


def lineage_record(link: Link) -> dict[str, Any]:
    """What a checkpoint records of one ancestor: enough to check splits without its file."""
    data = link.config.get("data") or {}
    return {
        "name": link.name,
        "commit": link.commit,
        "config": {
            "init": link.config.get("init"),
            "data": {key: data.get(key) for key in ("mode", "root", "train", "val")},
        },
    }


def _fingerprint(metadata: dict[str, Any]) -> str:
    """What identifies one trained model across copies (the shipped copy gains only its
    inference precision)."""
    return json.dumps(
        [metadata.get(key) for key in ("config", "epoch", "metrics", "commit")], sort_keys=True
    )


def init_lineage(
    init: str | None,
    *,
    resolve: Callable[[str], Path | None] = resolve_init,
    seen: Sequence[dict[str, Any]] = (),
) -> Lineage:
    """Walk the ``init`` chain from `init`: each weights file's metadata holds its config, whose
    ``init`` names the next.  A checkpoint that recorded its own lineage when its run started
    (``lineage`` metadata) ends the walk with that record, which still holds when an ancestor's
    file has since been replaced.  `seen` are the metadata of models already in the chain (the
    one being checked), so that a chain naming itself is reported, not followed forever.
    """
    from meddenoise.checkpoint import CheckpointError, read_metadata

    lineage = Lineage()
    fingerprints = {_fingerprint(metadata) for metadata in seen}
    source = init
    while source is not None:
        path = resolve(source)
        if path is None:
            lineage.unresolved = f"init {source!r}: no such weights file to read its config from"
            return lineage
        try:
            metadata = read_metadata(path)
        except CheckpointError as error:
            lineage.unresolved = f"init {source!r}: {error}"
            return lineage
        fingerprint = _fingerprint(metadata)
        if fingerprint in fingerprints:
            # e.g. `init: ct-lowdose` in the config of the weights now shipped as ct-lowdose: the
            # file the run started from was replaced by its own descendant.
            lineage.unresolved = (
                f"init {source!r} ({path}) is a model already in the chain: the weights that run "
                "started from were since replaced, so its ancestors are unknown"
            )
            return lineage
        fingerprints.add(fingerprint)
        config = metadata.get("config")
        if not isinstance(config, dict):
            lineage.unresolved = f"init {source!r} ({path}): no training config in its metadata"
            return lineage
        lineage.ancestors.append(Link(source, config, metadata.get("commit")))
        recorded = metadata.get("lineage")
        if isinstance(recorded, dict):
            lineage.ancestors.extend(
                Link(item["name"], item["config"], item.get("commit"))
                for item in recorded.get("ancestors", [])
            )
            lineage.unresolved = recorded.get("unresolved")
            return lineage
        source = config.get("init")
    return lineage


def problems_with_test_split(link: Link) -> list[str]:
    """One line per training or validation entry of `link` that is in the test split."""
    problems = []
    training, validation = data_entries(link.config)
    for role, entries in (("train", training), ("val", validation)):
        for entry in entries:
            members = members_of_test_split(entry)
            if members:
                problems.append(
                    f"{link.name}: data.{role} entry {entry!r} is in the test split "
                    f"({', '.join(members)})"
                )
    return problems


def overlap_problems(link: Link, elders: Sequence[Link]) -> list[str]:
    """One line per model in `elders` (`link` itself may be one) whose training data holds one
    of `link`'s validation images."""
    _, validation = data_entries(link.config)
    problems = []
    for elder in elders:
        shared = shared_images(validation, data_entries(elder.config)[0])
        if shared:
            whose = "its own" if elder is link else f"its ancestor {elder.name}'s"
            problems.append(
                f"{link.name}: validation image(s) {', '.join(shared)} are also in {whose} "
                "training data"
            )
    return problems


def lineage_problems(links: Sequence[Link]) -> list[str]:
    """Every broken rule in a chain, `links` nearest first (the model itself, its init, ...):
    a test-split entry in any model's training or validation data, or a validation image in the
    training data of its own model or of one of that model's ancestors."""
    problems = []
    for index, link in enumerate(links):
        problems += problems_with_test_split(link)
        problems += overlap_problems(link, links[index:])
    return problems


def start_problems(config: dict[str, Any], lineage: Lineage) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for a run about to start with `config` (a config dict) from the
    ancestors in `lineage`.

    Refused: a validation image that an ancestor trained on (the validation score would reward
    memory, and model selection with it), or a test-split entry anywhere in the chain (config
    loading already refuses one in `config`).  Warned: validation images in the run's own
    training data (self-supervised runs may mean it), an ancestor selected on its ancestors'
    training data, a chain that cannot be walked to its start.
    """
    itself = Link("this run", config)
    refusals = overlap_problems(itself, lineage.ancestors)
    warnings = overlap_problems(itself, [itself])
    for index, ancestor in enumerate(lineage.ancestors):
        refusals += problems_with_test_split(ancestor)
        warnings += overlap_problems(ancestor, lineage.ancestors[index:])
    if lineage.unresolved is not None:
        warnings.append(f"the init chain cannot be checked to its start: {lineage.unresolved}")
    return refusals, warnings


def checkpoint_chain(path: str | os.PathLike[str]) -> tuple[list[Link], str | None]:
    """The chain of the checkpoint at `path`, itself first, and why its walk stopped early."""
    from meddenoise.checkpoint import read_metadata

    metadata = read_metadata(path)
    config = metadata.get("config") or {}
    itself = Link(str(path), config, metadata.get("commit"))
    recorded = metadata.get("lineage")
    if isinstance(recorded, dict):  # recorded when the run started: what it really started from
        ancestors = [
            Link(item["name"], item["config"], item.get("commit"))
            for item in recorded.get("ancestors", [])
        ]
        return [itself, *ancestors], recorded.get("unresolved")
    lineage = init_lineage(config.get("init"), seen=[metadata])
    return [itself, *lineage.ancestors], lineage.unresolved


def verify_checkpoint(path: str | os.PathLike[str]) -> list[Link]:
    """The checkpoint's whole chain, itself first, once `lineage_problems` finds nothing in it
    and every ancestor was found; otherwise `ProvenanceError` listing what is wrong."""
    links, unresolved = checkpoint_chain(path)
    problems = lineage_problems(links)
    if unresolved is not None:
        problems.append(f"the init chain cannot be checked to its start: {unresolved}")
    if problems:
        raise ProvenanceError(f"{path}: " + "; ".join(problems))
    return links


def start_record(config: dict[str, Any], init: str | None) -> dict[str, Any]:
    """What a training run records when it starts, for every checkpoint it writes: the source
    commit, whether the tree was dirty, and its ``init`` chain's data lists.

    Raises `ProvenanceError` when `start_problems` refuses the chain; logs its warnings.
    """
    from meddenoise.checkpoint import source_state

    commit, dirty = source_state()
    lineage = init_lineage(init)
    refusals, warnings = start_problems(config, lineage)
    for warning in warnings:
        logger.warning("provenance: %s", warning)
    if refusals:
        raise ProvenanceError(
            "refusing to train: " + "; ".join(refusals) + " (choose validation images that no "
            "model in the init chain trained on; meddenoise.splits explains the rules)"
        )
    return {
        "commit": commit,
        "dirty": dirty,
        "sessions": [{"commit": commit, "dirty": dirty, "first_epoch": 0}],
        "lineage": {
            "ancestors": [lineage_record(ancestor) for ancestor in lineage.ancestors],
            "unresolved": lineage.unresolved,
        },
    }


def resumed_record(metadata: dict[str, Any], first_epoch: int) -> dict[str, Any]:
    """`start_record` as the run's last checkpoint (`metadata`) holds it, with this restart's
    session added: a resumed run keeps the commit it started from and lists each restart's."""
    from meddenoise.checkpoint import source_state

    commit, dirty = source_state()
    started = {"commit": metadata.get("commit"), "dirty": metadata.get("dirty")}
    earlier = metadata.get("sessions") or [started | {"first_epoch": 0}]
    return {
        **started,
        "sessions": [*earlier, {"commit": commit, "dirty": dirty, "first_epoch": first_epoch}],
        "lineage": metadata.get("lineage"),
    }
