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
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from meddenoise.io import (
    DEFAULT_MAX_PIXELS,
    Image,
    ImageError,
    WriteReport,
    detect_format,
    format_for_suffix,
    image_properties,
    is_image_file,
    output_name,
    read_image,
    write_image,
)
from meddenoise.io.base import refuse_overwriting_input
from meddenoise.pipeline import check_strength, denoise_image, transform_image
from meddenoise.types import Denoiser, NoiseModel, is_colour

if TYPE_CHECKING:
    from meddenoise.io.dicom import SeriesHeader

__all__ = [
    "CLIP_WARNING_FRACTION",
    "DenoiseSettings",
    "DenoiserPerKind",
    "Item",
    "ItemResult",
    "Status",
    "check_output_folder",
    "denoise_item",
    "noise_map_path",
    "plan_batch",
    "plan_pairs",
    "run_batch",
    "series_folder_name",
    "simulate_item",
    "summarise",
]

Status = Literal["written", "skipped", "ignored", "failed"]
# A denoiser pushes a flat black (or white) background a little past the end of the stored range
# and clipping puts it back: information.  More than a fifth of an image clipped is more than a
# background: a warning.
CLIP_WARNING_FRACTION = 0.2
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
    ignored
        Why the item is not an image to process (a text file, a DICOMDIR), one line naming the
        file; empty for images.  `run_batch` reports it as "ignored", not as a failure.
    """

    index: int
    source: Path
    output: Path | None
    inputs: tuple[Path, ...] = ()
    folder: bool = False
    problem: str = ""
    ignored: str = ""

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
        "written", "skipped" (its output was already complete, with ``resume=True``), "ignored"
        (not an image: a text file, a DICOMDIR) or "failed".
    reason
        For "skipped", "ignored" and "failed": one line that names the file and says why; else
        empty.
    clipped
        Values the writer clipped into the stored range (never wrapped).
    paths
        The files written.
    values
        Values written in all, for the clipped fraction (0 when the writer does not count).
    """

    source: Path
    output: Path | None
    status: Status
    reason: str = ""
    clipped: int = 0
    paths: tuple[Path, ...] = ()
    values: int = 0

    @property
    def clipped_fraction(self) -> float:
        """The share of the written values that were clipped into the stored range."""
        return self.clipped / self.values if self.values else 0.0

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


def _file_item(path: Path, target: Path, format_name: str | None = None) -> Item:
    """One file, written under `target` with its format's suffix (`io.output_name`)."""
    name = output_name(path.name, format_name or _format_guess(path))
    return Item(0, path, target / name, (path,))


def _not_an_image(path: Path, why: str) -> Item:
    return Item(0, path, None, (path,), ignored=str(ImageError(path, why)))


def series_folder_name(header: SeriesHeader, taken: set[str]) -> str:
    """The output folder of a series that shares its folder with other series.

    ``series_<SeriesNumber>_<SeriesDescription>`` in letters, digits, '.', '-' and '_'; the end
    of the SeriesInstanceUID is added when two series would get one name.

    Parameters
    ----------
    header
        The series' header (`io.dicom.series_header`).
    taken
        Names already given in the same folder; the new name is added to it.

    Returns
    -------
    str
    """
    words = ["series", header.number, header.description]
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(word for word in words if word)).strip("._")
    if name in taken:
        name = f"{name}_{header.uid.replace('.', '')[-8:]}"
    base, count = name, 2
    while name in taken:
        name, count = f"{base}_{count}", count + 1
    taken.add(name)
    return name


def _directory_items(directory: Path, target: Path) -> list[Item]:
    """The items of one directory's files (not its sub-folders), written under `target`.

    Files that are not images (by name and first bytes), and DICOM files without pixel data (a
    DICOMDIR, a report, a plan) become ignored items that say so.  The DICOM slices of a series
    (more than one file) are one item, read as a volume; when the directory holds several series,
    each goes to its own folder (`series_folder_name`).
    """
    from meddenoise.io.dicom import series_header

    items: list[Item] = []
    series: dict[str, list[Path]] = {}
    headers: dict[str, SeriesHeader] = {}
    for path in sorted(path for path in directory.iterdir() if path.is_file()):
        if path.name.startswith("."):
            continue
        if not is_image_file(path):
            items.append(_not_an_image(path, "not an image file"))
            continue
        format_name = _format_guess(path)
        if format_name != "dicom":
            items.append(_file_item(path, target, format_name))
            continue
        header = series_header(path)
        if header is not None and not header.image:
            items.append(_not_an_image(path, "a DICOM file without an image (pixel data)"))
            continue
        key = header.uid if header is not None and header.uid else f"unreadable:{path.name}"
        series.setdefault(key, []).append(path)
        if header is not None:
            headers.setdefault(key, header)
    volumes = {key: members for key, members in series.items() if len(members) > 1}
    taken: set[str] = set()
    for key, members in sorted(series.items(), key=lambda entry: _series_order(headers, entry)):
        if key not in volumes:
            items.append(_file_item(members[0], target, "dicom"))
        elif len(volumes) == 1 and len(series) == 1:
            items.append(Item(0, directory, target, tuple(members), folder=True))
        else:
            output = target / series_folder_name(headers[key], taken)
            items.append(Item(0, directory, output, tuple(members), folder=True))
    return items


def _series_order(headers: dict[str, SeriesHeader], entry: tuple[str, list[Path]]) -> tuple:
    header = headers.get(entry[0])
    number = header.number if header is not None else ""
    return (0, int(number), entry[0]) if number.isdigit() else (1, 0, entry[0])


def _folder_items(folder: Path, target: Path, output_roots: Sequence[Path]) -> list[Item]:
    """Every image under `folder`, mirrored under `target`.

    Hidden files and folders are skipped, and so are the batch's output folders (`output_roots`:
    the output folder and, with several inputs, each input folder's own) when they lie inside
    `folder`, so outputs are never read again as inputs.  When `folder` lies inside the output
    folder nothing is skipped: the plan refuses the outputs that would overwrite inputs instead
    of silently finding nothing.
    """
    root = folder.resolve()
    skipped = [path.resolve() for path in output_roots if root in path.resolve().parents]
    items: list[Item] = []
    directories = [folder, *sorted(path for path in folder.rglob("*") if path.is_dir())]
    for directory in directories:
        resolved = directory.resolve()
        if any(resolved == out or out in resolved.parents for out in skipped):
            continue
        if any(part.startswith(".") for part in directory.relative_to(folder).parts):
            continue
        items.extend(_directory_items(directory, target / directory.relative_to(folder)))
    return items


def check_output_folder(outdir: str | os.PathLike[str]) -> Path:
    """`outdir` as a Path, after checking it is, or can become, a folder.

    Parameters
    ----------
    outdir
        The output folder of a batch.

    Returns
    -------
    Path

    Raises
    ------
    ImageError
        Naming `outdir` (or the file in its way) when a file stands where the folder must go.
    """
    outdir = Path(outdir)
    for candidate in (outdir, *outdir.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "" if candidate == outdir else f" ({candidate} is a file)"
                raise ImageError(
                    outdir, f"the output must be a folder, and a file is in the way{where}"
                )
            break
    return outdir


def _discover(inputs: Sequence[Path], outdir: Path) -> list[Item]:
    if len(inputs) == 1 and inputs[0].is_dir():
        # One folder: the output folder mirrors it (no extra level named after it).
        return _folder_items(inputs[0], outdir, [outdir])
    roots = [outdir, *(outdir / source.name for source in inputs if source.is_dir())]
    items: list[Item] = []
    for source in inputs:
        if source.is_dir():
            items.extend(_folder_items(source, outdir / source.name, roots))
        elif source.exists():
            items.append(_file_item(source, outdir))
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
        The output folder.  A file ``x.png`` is written to ``outdir/x.png``, under its format's
        suffix (`io.output_name`: a PNG named ``x.dcm`` is written as ``outdir/x.png``).  One
        folder given alone is mirrored in `outdir` itself (``study/a/b.png`` ->
        ``outdir/a/b.png``); among several inputs, a folder ``study`` is mirrored in
        ``outdir/study/``.  A folder's DICOM slices of one series become a folder of derived
        slices; a folder holding several series gives each its own folder
        (`series_folder_name`).

    Returns
    -------
    list of Item
        In input order, folders in sorted order.  Missing inputs, outputs that would overwrite an
        input, and outputs another item already writes are items with a `problem`, which
        `run_batch` reports as failed without running anything for them; files that are not
        images (by name and first bytes, or DICOM files without pixel data) are items with an
        `ignored` reason.

    Raises
    ------
    ImageError
        When a file stands where the output folder must go (`check_output_folder`).
    """
    paths = [Path(path) for path in inputs]
    return _refuse_collisions(_discover(paths, check_output_folder(outdir)))


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
    for source_name, target_name in pairs:
        source, output = Path(source_name), Path(target_name)
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
    if item.ignored:
        return ItemResult(item.source, item.output, "ignored", item.ignored)
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
        item.source,
        item.output,
        "written",
        clipped=report.clipped,
        paths=report.paths,
        values=report.values,
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


def result_line(result: ItemResult) -> str | None:
    """The line a command prints (on stderr) for one result as it happens, or None.

    Failures are errors; files that are not images say they were skipped; a written image warns
    only when more than `CLIP_WARNING_FRACTION` of its values were clipped into the stored range
    (smaller clips are counted in `summarise`).

    Parameters
    ----------
    result
        One result of `run_batch`.

    Returns
    -------
    str or None
    """
    if result.status == "failed":
        return f"error: {result.reason}"
    if result.status == "ignored":
        return f"skipped: {result.reason}"
    if result.status == "written" and result.clipped_fraction > CLIP_WARNING_FRACTION:
        return (
            f"warning: {result.output}: {result.clipped_fraction:.1%} of the values were clipped "
            "into the stored range, more than a background: check the output"
        )
    return None


def summarise(results: Sequence[ItemResult], *, verb: str, outdir: Path) -> list[str]:
    """The closing lines of a batch: what was written, skipped and failed, and the clipping.

    Parameters
    ----------
    results
        What `run_batch` returned.
    verb
        What the batch did to each item ("denoised").
    outdir
        Where it wrote.

    Returns
    -------
    list of str
        ``"denoised: 3 written to out, 1 already written, 2 not images skipped, 0 failed"``,
        and when values were clipped, a note with how many images and the largest fraction.
    """
    counts = {status: 0 for status in ("written", "skipped", "ignored", "failed")}
    for result in results:
        counts[result.status] += 1
    parts = [f"{verb}: {counts['written']} written to {outdir}"]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} already written")
    if counts["ignored"]:
        parts.append(f"{counts['ignored']} not images skipped")
    lines = [", ".join([*parts, f"{counts['failed']} failed"])]
    clipped = [result for result in results if result.status == "written" and result.clipped]
    if clipped:
        largest = max(result.clipped_fraction for result in clipped)
        lines.append(
            f"note: {len(clipped)} of the written images had values clipped into the stored "
            f"range (at most {largest:.2%} of an image's values), as when a denoiser takes a "
            "black background below the darkest storable value"
        )
    return lines


# --- denoising ---


def _read_item(item: Item, *, max_pixels: int | None, window: tuple[float, float] | None) -> Image:
    """The item's image: its file, or the slices it lists of a series folder."""
    files = item.inputs if item.folder else None
    return read_image(item.source, max_pixels=max_pixels, window=window, files=files)


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


@dataclass(frozen=True)
class DenoiseSettings:
    """Everything `meddenoise denoise` does to each item, as plain values.

    What a worker in another process (a Dask cluster: `meddenoise.scale`) needs to build the same
    denoisers and the same per-item work as the command; levels in the library's [0, 1] units.
    """

    method: str = "default"
    sigma: float | None = None
    photons: float | None = None
    read_noise: float = 0.0
    precision: str = "auto"
    backend: str = "torch"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    window: tuple[float, float] | None = None
    strength: float = 1.0
    noise_map: Path | None = None
    outdir: Path | None = None

    def build(self, colour: bool) -> Denoiser:
        """The denoiser for colour images if `colour`, else for grey ones (`methods.resolve`)."""
        from meddenoise.methods import resolve

        return resolve(
            self.method,
            colour=colour,
            sigma=self.sigma,
            photons=self.photons,
            read_noise=self.read_noise,
            precision=self.precision,
            backend=self.backend,
        )

    def work(self, denoisers: DenoiserPerKind) -> Callable[[Item], WriteReport]:
        """`denoise_item` with these settings (a bad strength raises ValueError here)."""
        maps = None
        if self.noise_map is not None:
            # Absolute, like a distributed run's items, so the mirrored paths agree.
            maps = noise_map_path(Path(self.outdir or ".").absolute(), self.noise_map.absolute())
        return denoise_item(
            denoisers,
            max_pixels=self.max_pixels,
            window=self.window,
            strength=self.strength,
            noise_map=maps,
        )


def noise_map_path(
    outdir: str | os.PathLike[str], folder: str | os.PathLike[str]
) -> Callable[[Item], Path]:
    """Where `denoise_item` writes an item's noise level map: `folder` mirrors `outdir`.

    The map of the output ``outdir/a/b.dcm`` is ``folder/a/b.dcm.noise.tiff`` (a float32 TIFF,
    `noise_map.write_noise_map`); a series folder's map is one multi-page TIFF beside where
    its folder would go.

    Returns
    -------
    callable
        ``path_for(item) -> Path``.
    """
    root, target = Path(outdir), Path(folder)

    def path_for(item: Item) -> Path:
        assert item.output is not None  # planned items without an output carry a problem
        relative = item.output.relative_to(root) if item.output.is_relative_to(root) else None
        relative = relative if relative is not None else Path(item.output.name)
        return target / relative.parent / f"{relative.name}.noise.tiff"

    return path_for


def denoise_item(
    denoiser: Denoiser | DenoiserPerKind,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
    strength: float = 1.0,
    noise_map: Callable[[Item], Path] | None = None,
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
    strength
        How much of the denoiser's change to keep, in [0, 1] (`pipeline.blend_images`).
    noise_map
        ``path_for(item)`` (`noise_map_path`): also write the noise level the method used there.

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

    check_strength(strength)  # a bad strength fails before any file is read

    def work(item: Item) -> WriteReport:
        assert item.output is not None  # planned items without an output carry a problem
        image = _read_item(item, max_pixels=max_pixels, window=window)
        chosen = (
            denoiser(is_colour(image.meta.layout))
            if isinstance(denoiser, DenoiserPerKind)
            else denoiser
        )
        report = write_image(denoise_image(image, chosen, strength=strength), item.output)
        if noise_map is None:
            return report
        from meddenoise.noise_map import noise_level_image, write_noise_map

        target = noise_map(item)
        refuse_overwriting_input(target, list(item.inputs))
        written = write_noise_map(noise_level_image(image, chosen), target)
        return dataclasses.replace(report, paths=(*report.paths, written))

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
        image = _read_item(item, max_pixels=max_pixels, window=window)
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
