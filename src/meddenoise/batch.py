"""Many images in, one derived image out for each: discover, plan, run, report.

The runner behind `meddenoise denoise` and `meddenoise simulate`, and the one a DICOM node, DICOMweb
or a distributed batch calls:

1. `plan_batch` finds the images under files and folders (a folder holding one DICOM series is one
   item) and plans each output: the same name and format under the output folder, sub-folders
   mirrored.  An item that would overwrite an input, or write what another item already writes,
   is refused before anything runs.  `plan_pairs` plans explicit (input, output) pairs.
2. `run_batch` runs one per-item function over the plan, keeps going past failures and returns one
   `ItemResult` per item (written, skipped or failed, with the reason).  With ``resume=True`` an
   item whose every output file exists is skipped: writers replace files atomically (a temporary
   file, then `os.replace`), so a file that exists is complete.
3. `denoise_item` (read -> denoise -> write) and `simulate_item` (read -> add noise -> write)
   are the per-item functions.  Nothing is built per item: they take the denoiser, or a
   `DenoiserPerKind` that builds one denoiser per kind of image on first need and keeps it, and
   the noise model.

    results = run_batch(plan_batch(["study/"], "out/"), denoise_item(resolve("nlm")), resume=True)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from meddenoise.io import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    WriteReport,
    detect_format,
    format_for_suffix,
    image_properties,
    is_image_file,
    read_image,
    write_image,
)
from meddenoise.pipeline import denoise_image, transform_image
from meddenoise.types import Denoiser, NoiseModel, is_colour

__all__ = [
    "DenoiserPerKind",
    "Item",
    "ItemResult",
    "Status",
    "denoise_item",
    "plan_batch",
    "plan_pairs",
    "run_batch",
    "simulate_item",
]

Status = Literal["written", "skipped", "failed"]
# What a per-item function may raise for one bad item without stopping the batch; anything else
# is a bug and stops it.
ITEM_ERRORS = (ImageError, ValueError, OSError, RuntimeError, TypeError)


@dataclass(frozen=True)
class Item:
    """One unit of work: an image file or a DICOM series folder, and where its output goes.

    Attributes
    ----------
    index
        Position in the plan; per-item randomness (a noise seed) derives from it, so a resumed
        or sharded batch gives every item what an uninterrupted one would.
    source
        The file, or the folder of a DICOM series.
    output
        The output file, or the output folder of a series; None when nothing could be planned.
    inputs
        Every file the item reads (the slices of a series).
    folder
        Whether `output` is a folder that receives one file per input, named as the input.
    problem
        Why the item cannot run, one line naming the file; empty when it can.
    """

    index: int
    source: Path
    output: Path | None
    inputs: tuple[Path, ...] = ()
    folder: bool = False
    problem: str = ""

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the item writes: its output file, or each slice file of a series folder."""
        if self.output is None:
            return ()
        if self.folder:
            return tuple(self.output / path.name for path in self.inputs)
        return (self.output,)


@dataclass(frozen=True)
class ItemResult:
    """What happened to one item: one row of a batch's result table.

    Attributes
    ----------
    source
        The item's file or series folder.
    output
        Its planned output, or None when none could be planned.
    status
        "written", "skipped" (its output was already complete, with ``resume=True``) or "failed".
    reason
        For "skipped" and "failed": one line that names the file and says why; else empty.
    clipped
        Values the writer clipped into the stored range (never wrapped).
    paths
        The files written.
    """

    source: Path
    output: Path | None
    status: Status
    reason: str = ""
    clipped: int = 0
    paths: tuple[Path, ...] = ()

    def as_row(self) -> dict[str, str]:
        """The result as text fields, e.g. for `csv.DictWriter`.

        Returns
        -------
        dict of str to str
            source, output, status, reason, clipped and paths (joined by ";").
        """
        return {
            "source": str(self.source),
            "output": "" if self.output is None else str(self.output),
            "status": self.status,
            "reason": self.reason,
            "clipped": str(self.clipped),
            "paths": ";".join(str(path) for path in self.paths),
        }


# --- discovery and planning ---


def _format_guess(path: Path) -> str | None:
    """The file's format by content, else by name (a broken '.dcm' still counts as DICOM)."""
    try:
        return detect_format(path)
    except ImageError:
        return format_for_suffix(path)


def _folder_items(folder: Path, outdir: Path) -> list[Item]:
    """Every image under `folder`, mirrored under ``outdir / folder.name``.

    A sub-folder whose DICOM files are all of one series, and more than one, is one item (read as a
    volume); every other file is its own item.  Hidden files and folders are skipped, and so are
    the outputs when they lie inside `folder` (an output folder inside the input folder, or the
    input folder given as the output folder), so outputs are never read again as inputs.  When
    `folder` lies inside the output folder nothing is skipped: the plan refuses the outputs that
    would overwrite inputs instead of silently finding nothing.
    """
    from meddenoise.io.dicom import series_key

    root = folder.resolve()
    skipped_root = None
    for candidate in (outdir.resolve(), (outdir / folder.name).resolve()):
        if root in candidate.parents:
            skipped_root = candidate
            break
    items: list[Item] = []
    directories = [folder, *sorted(path for path in folder.rglob("*") if path.is_dir())]
    for directory in directories:
        resolved = directory.resolve()
        if skipped_root is not None and (
            resolved == skipped_root or skipped_root in resolved.parents
        ):
            continue
        if any(part.startswith(".") for part in directory.relative_to(folder).parts):
            continue
        target = outdir / folder.name / directory.relative_to(folder)
        files = sorted(
            path for path in directory.iterdir() if path.is_file() and is_image_file(path)
        )
        series: dict[str, list[Path]] = {}
        for path in files:
            if _format_guess(path) != "dicom":
                items.append(Item(0, path, target / path.name, (path,)))
                continue
            key = series_key(path)
            series.setdefault(key or f"unreadable:{path.name}", []).append(path)
        for members in series.values():
            # A series of several files is one volume only when it is the folder's only series.
            if len(members) > 1 and len(series) == 1:
                items.append(Item(0, directory, target, tuple(members), folder=True))
            else:
                items.extend(Item(0, path, target / path.name, (path,)) for path in members)
    return items


def _discover(inputs: Sequence[Path], outdir: Path) -> list[Item]:
    items: list[Item] = []
    for source in inputs:
        if source.is_dir():
            items.extend(_folder_items(source, outdir))
        elif source.exists():
            items.append(Item(0, source, outdir / source.name, (source,)))
        else:
            items.append(
                Item(0, source, None, problem=str(ImageError(source, "no such file or folder")))
            )
    return items


def _refuse_collisions(items: list[Item]) -> list[Item]:
    """Number the items and refuse those that would overwrite an input or another item's output."""
    all_inputs = {path.resolve() for item in items for path in (item.source, *item.inputs)}
    written: set[Path] = set()
    planned: list[Item] = []
    for index, item in enumerate(items):
        item = dataclasses.replace(item, index=index)
        targets = {path.resolve(): path for path in item.outputs}
        if not item.problem and item.output is not None:
            if written.intersection(targets):
                problem = ImageError(item.source, f"another input already writes {item.output}")
                item = dataclasses.replace(item, problem=str(problem))
            elif overwritten := [
                path for resolved, path in targets.items() if resolved in all_inputs
            ]:
                problem = ImageError(overwritten[0], "refusing to overwrite an input file")
                item = dataclasses.replace(item, problem=str(problem))
            else:
                written.update(targets)
        planned.append(item)
    return planned


def plan_batch(
    inputs: Sequence[str | os.PathLike[str]], outdir: str | os.PathLike[str]
) -> list[Item]:
    """Discover the images under `inputs` and plan where each output goes.

    Parameters
    ----------
    inputs
        Image files, DICOM series folders and folders of images (searched recursively).
    outdir
        The output folder: a file ``x.png`` is written to ``outdir/x.png``, a folder ``study`` is
        mirrored as ``outdir/study/...``, a DICOM series folder becomes a folder of derived slices.

    Returns
    -------
    list of Item
        In input order, folders in sorted order.  Missing inputs, outputs that would overwrite an
        input, and outputs another item already writes are items with a `problem`, which
        `run_batch` reports as failed without running anything for them.
    """
    paths = [Path(path) for path in inputs]
    return _refuse_collisions(_discover(paths, Path(outdir)))


def plan_pairs(
    pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
) -> list[Item]:
    """Plan explicit (input, output) pairs, checked as `plan_batch` checks its plan.

    Parameters
    ----------
    pairs
        An image file and its output file, or a DICOM series folder and its output folder.

    Returns
    -------
    list of Item
        One item per pair, in order; missing inputs and unsafe outputs carry a `problem`.
    """
    from meddenoise.io.dicom import series_files

    items: list[Item] = []
    for source_name, output_name in pairs:
        source, output = Path(source_name), Path(output_name)
        if source.is_dir():
            try:
                items.append(Item(0, source, output, tuple(series_files(source)), folder=True))
            except ImageError as error:
                items.append(Item(0, source, output, problem=str(error)))
        elif source.exists():
            items.append(Item(0, source, output, (source,)))
        else:
            problem = ImageError(source, "no such file or folder")
            items.append(Item(0, source, None, problem=str(problem)))
    return _refuse_collisions(items)


# --- running ---


def _run_item(item: Item, work: Callable[[Item], WriteReport], *, resume: bool) -> ItemResult:
    if item.problem:
        return ItemResult(item.source, item.output, "failed", item.problem)
    if resume and all(path.exists() for path in item.outputs):
        reason = str(ImageError(item.output, "already written (resumed batch)"))
        return ItemResult(item.source, item.output, "skipped", reason)
    try:
        report = work(item)
    except ITEM_ERRORS as error:
        message = str(error) if isinstance(error, ImageError) else f"{item.source}: {error}"
        reason = " ".join(line.strip() for line in message.splitlines() if line.strip())
        return ItemResult(item.source, item.output, "failed", reason)
    return ItemResult(
        item.source, item.output, "written", clipped=report.clipped, paths=report.paths
    )


def run_batch(
    items: Sequence[Item],
    work: Callable[[Item], WriteReport],
    *,
    resume: bool = False,
    on_result: Callable[[ItemResult], object] | None = None,
    progress: Callable[[Sequence[Item]], Iterable[Item]] | None = None,
) -> list[ItemResult]:
    """Run `work` over every planned item; a bad item is reported and the batch goes on.

    Parameters
    ----------
    items
        A plan from `plan_batch` or `plan_pairs`.
    work
        ``work(item) -> WriteReport`` (`denoise_item`, `simulate_item`): reads ``item.source``,
        writes ``item.output``.  An `ImageError`, ValueError, OSError, RuntimeError or TypeError
        fails only its item; any other exception is a bug and stops the batch.
    resume
        Skip an item whose every output file already exists (each was written atomically, so it
        is complete).  The existing files are trusted to come from the same settings.
    on_result
        Called with each result as soon as it is known (to print failures as they happen).
    progress
        Wraps the items for iteration, e.g. a ``tqdm`` progress bar.

    Returns
    -------
    list of ItemResult
        One per item, in plan order.
    """
    results = []
    for item in progress(items) if progress is not None else items:
        result = _run_item(item, work, resume=resume)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


# --- denoising ---


@dataclass
class DenoiserPerKind:
    """One denoiser per kind of image (grey or colour), built on first need and then reused.

    A batch of grey and colour files needs a grey and a colour denoiser; building each once per
    batch, not per file, is what keeps a network from being loaded for every image.

    Parameters
    ----------
    build
        ``build(colour) -> Denoiser``, e.g. ``lambda colour: methods.resolve(name, colour=colour)``.
    """

    build: Callable[[bool], Denoiser]
    _built: dict[bool, Denoiser] = field(default_factory=dict, init=False, repr=False)

    def __call__(self, colour: bool) -> Denoiser:
        """The denoiser for colour (RGB) images if `colour`, else for grey images and volumes."""
        if colour not in self._built:
            self._built[colour] = self.build(colour)
        return self._built[colour]


def denoise_item(
    denoiser: Denoiser | DenoiserPerKind,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
) -> Callable[[Item], WriteReport]:
    """The per-item function that denoises: read -> denoise -> write, for `run_batch`.

    Parameters
    ----------
    denoiser
        The one denoiser for every image, or a `DenoiserPerKind` choosing by colour.
    max_pixels
        Refuse images with more pixels than this (`read_image`).
    window
        ``(center, width)`` in modality units mapped to [0, 1] instead of each image's range.

    Returns
    -------
    callable
        ``work(item) -> WriteReport``.

    Examples
    --------
    >>> from meddenoise.methods import resolve
    >>> run_batch(plan_batch(["absent.png"], "out"), denoise_item(resolve("median")))[0].status
    'failed'
    """

    def work(item: Item) -> WriteReport:
        assert item.output is not None  # planned items without an output carry a problem
        image = read_image(item.source, max_pixels=max_pixels, window=window)
        chosen = (
            denoiser(is_colour(image.meta.layout))
            if isinstance(denoiser, DenoiserPerKind)
            else denoiser
        )
        return write_image(denoise_image(image, chosen), item.output)

    return work


# --- simulated noise ---


def _noise_name(model: NoiseModel) -> str:
    from meddenoise.noise import NOISE_MODELS

    names = [name for name, kind in NOISE_MODELS.items() if type(model) is kind]
    return names[0] if names else type(model).__name__


def simulate_item(
    model: NoiseModel,
    *,
    seed: int = 0,
    properties: Mapping[str, float] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
) -> Callable[[Item], WriteReport]:
    """The per-item function that adds noise: read -> noise -> write, for `run_batch`.

    Parameters
    ----------
    model
        A noise model from `meddenoise.noise`, in [0, 1] units of each image's mapped range.
    seed
        Item ``i`` draws from ``numpy.random.default_rng(seed + i)``: the same seed gives the same
        files, whichever items a resumed batch skips, and a one-item plan draws what
        ``default_rng(seed)`` draws.
    properties
        Image properties that override what each file says, for the models that take them
        (`noise.fit_to_image`): ``{"pixel_spacing_mm": 0.7}`` sets low-dose CT's pixel size.
    max_pixels, window
        As for `denoise_item`.

    Returns
    -------
    callable
        ``work(item) -> WriteReport``.
    """
    from meddenoise.noise import fit_to_image

    name = _noise_name(model)

    def work(item: Item) -> WriteReport:
        assert item.output is not None  # planned items without an output carry a problem
        image = read_image(item.source, max_pixels=max_pixels, window=window)
        chosen = fit_to_image(model, {**image_properties(image), **(properties or {})})
        item_seed = seed + item.index
        generator = np.random.default_rng(item_seed)
        fields = {key: value for key, value in vars(chosen).items() if not key.startswith("_")}
        noisy = transform_image(
            image,
            lambda clean: chosen(clean, generator),
            method="simulated noise",
            parameters={"noise": name, "seed": item_seed, **fields},
        )
        return write_image(noisy, item.output)

    return work
