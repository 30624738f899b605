"""`adapt`: adapt a shipped network to a user's own noisy images, guard it, write it.

The steps, each its own function so the benchmark can run them with other settings:

1. `read_planes`: the files (`batch.plan_batch` finds files, folders and DICOM series;
   `io.read_image` reads them), every 2-D plane mapped to [0, 1] by its image's own mapping,
   and a SHA-256 over the pixel data (never a name).
2. `hold_back`: a fifth of the planes (or, for one image, a strip of it) for the guard.
3. `choose_pd_factor`: the noise's correlation measured on the training planes; noise white at
   lag 1 keeps the base model (trained for it) without training.
4. The objective.  "synthetic" (the default, `meddenoise.adapt.synthetic`): the noise's
   covariance measured in the flattest windows, the base network trained at full resolution on
   its own clean training images plus noise drawn with that covariance, told each image's
   flattest-window noise std (``level_map`` "flat-windows"; CT: at each pixel the std of the
   flattest windows near it, "local-flat-windows").  "pd-n2n": the base weights on the
   pixel-shuffle sub-images at the smallest stride where the correlation is gone (`PDCondUNet`,
   told the std measured on them, ``level_map`` "sub-images"), fine-tuned with
   Neighbor2Neighbor there (`fine_tune`, `objectives`) only with a budget.  On the final set of
   the adaptation benchmark the synthetic objective beat the PD calibration by 1.3-1.6 dB on
   correlated Gaussian noise; both harm mild CT noise (docs/adapt.md).
5. `guard.compare` on the held-back planes; the adapted network is written only when it is not
   worse (or when forced), else the base network, and the card says which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meddenoise import __version__
from meddenoise.adapt.guard import GuardReport, compare, noise_autocorrelation
from meddenoise.adapt.objectives import OBJECTIVES, neighbour_loss
from meddenoise.adapt.synthetic import level_map_for
from meddenoise.estimate import (
    blind_noise_level,
    blind_noise_map,
    flat_window_noise_std,
    sub_image_noise_level,
)
from meddenoise.inference import NeuralDenoiser, per_pixel_levels
from meddenoise.io.base import ImageError, atomic_output
from meddenoise.methods import SHIPPED_MODELS, file_digest, shipped_weights
from meddenoise.models.pd_cond_unet import PDCondUNet

__all__ = [
    "AdaptProgress",
    "AdaptResult",
    "FineTuneResult",
    "NoiseMeasurement",
    "Planes",
    "adapt",
    "choose_pd_factor",
    "fine_tune",
    "hold_back",
    "inference_level_map",
    "read_planes",
]

logger = logging.getLogger(__name__)

# Patches per step and their side: small, so a step takes a fraction of a second on one core and
# a budget of minutes gives hundreds of steps.  96 is a multiple of 2 x 2 and 2 x 3 (PD factors
# 2 and 3, then Neighbor2Neighbor's 2 x 2 cells).
BATCH = 4
PATCH = 96
# Fine-tuning, not training: a learning rate a tenth of the shipped models' training rate.
LEARNING_RATE = 1e-4
# The default budget of `adapt` (objective "synthetic"): on the tuning set 2 minutes on one
# core already beat BM3D given the true noise spectrum (docs/adapt.md).
DEFAULT_MINUTES = 3.0
HOLD_BACK_FRACTION = 0.2
# The planes kept for training and for the guard at most (evenly spread over the inputs): a
# budget of minutes sees a few hundred patches, and the guard runs both networks on each.
MAX_TRAINING_PLANES = 128
MAX_GUARD_PLANES = 8
# The noise measurement and the guard's figures need room: on emri_small's 64² MR slices the
# stride-3 sub-images (21²) read anatomy as noise, the calibrated network removed anatomy and
# the guard, whose scores were validated on 128² crops, did not see it (docs/adapt.md).
MIN_SIDE = 128
# The PD factor "auto" picks: the smallest stride at which the noise's correlation, measured in
# the flattest windows, falls under this (white noise: factor 1, the base model is kept).  A
# rule on the noise std read at successive strides (pick where the reading settles) was tried
# and failed: image texture aliased into the sub-images keeps the reading rising, and on images
# of 128-192 px or at 5/255 noise it chose stride 4 for every correlated noise (docs/adapt.md).
WHITE_CORRELATION = 0.15
MAX_PD_FACTOR = 4
# The noise std is read (for the card) at strides whose sub-images keep this many pixels a side.
MIN_SUB_IMAGE = 32
# Early stopping: held-back patches scored every this many seconds, on fixed cells.
VALIDATION_PATCHES = 16
VALIDATE_SECONDS = 10.0
VALIDATION_SEED = 0


@dataclass(frozen=True)
class Planes:
    """The user's images as 2-D planes (H, W, C) in [0, 1], and what the card may say of them."""

    planes: list[np.ndarray]
    images: int
    sha256: str
    modalities: tuple[str | None, ...] = ()  # each image's DICOM Modality (None: not DICOM)
    spacings: tuple[float | None, ...] = ()  # each image's pixel width in mm, as its file says

    @property
    def pixel_spacing_mm(self) -> float | None:
        """The images' median pixel width (mm), None where no file states one."""
        known = [value for value in self.spacings if value is not None]
        return float(np.median(known)) if known else None


@dataclass(frozen=True)
class AdaptProgress:
    """One progress report: steps done, seconds spent and left of the budget, the last loss."""

    step: int
    elapsed: float
    remaining: float
    loss: float


@dataclass
class AdaptResult:
    """What `adapt` wrote and why.

    Attributes
    ----------
    output : Path
        The checkpoint (usable as ``--method OUTPUT``).
    card_path : Path
        The model card beside it (``.md``).
    kept : str
        "adapted", or "base" when the guard kept the base model's weights.
    guard : GuardReport
        The guard's figures.
    card : dict
        The card as stored in the checkpoint's metadata (key ``adaptation``).
    """

    output: Path
    card_path: Path
    kept: str
    guard: GuardReport
    card: dict[str, Any] = field(default_factory=dict)


# --- reading ---------------------------------------------------------------------------------


def _planes_of(array: np.ndarray, layout: str) -> list[np.ndarray]:
    """Every 2-D plane of an image array as (H, W, C)."""
    if layout == "grey":
        return [array[..., None]]
    if layout == "colour":
        return [array]
    if layout == "volume":
        return [plane[..., None] for plane in array]
    if layout == "volumes":
        return [plane[..., None] for volume in array for plane in volume]
    if layout == "colour_frames":
        return list(array)
    raise ValueError(f"unknown layout {layout!r}")


def read_planes(inputs: Sequence[str | os.PathLike[str]], *, channels: int) -> Planes:
    """The images under `inputs` as planes in [0, 1] with `channels` channels.

    Parameters
    ----------
    inputs : sequence of paths
        Files, folders of images and DICOM series folders (as ``meddenoise denoise`` takes).
    channels : int
        1 for a grey base model (colour images are refused), 3 for a colour one (grey images are
        given three equal channels, as `NeuralDenoiser` does).

    Raises
    ------
    ValueError
        No images found, an unreadable one (the message names the file), or the wrong colour.
    """
    from meddenoise.batch import plan_batch
    from meddenoise.io import pixel_spacing_mm, read_image
    from meddenoise.types import is_colour

    if not inputs:
        raise ValueError("no inputs given: name image files, folders or DICOM series")
    # plan_batch plans outputs too; nothing is written to this folder, it only has to be new.
    plan_folder = Path(tempfile.gettempdir()) / f"meddenoise-adapt-{os.getpid()}-plan"
    items = plan_batch(list(inputs), plan_folder)
    digest = hashlib.sha256()
    planes: list[np.ndarray] = []
    modalities: list[str | None] = []
    spacings: list[float | None] = []
    images = 0
    for item in items:
        if item.problem:
            raise ValueError(item.problem)
        if item.ignored:
            logger.info("ignored: %s", item.ignored)
            continue
        try:
            image = read_image(item.source, files=item.inputs if item.folder else None)
        except ImageError as error:
            raise ValueError(str(error)) from None
        colour = is_colour(image.meta.layout)
        if colour and channels == 1:
            raise ValueError(
                f"{item.source}: a colour image; adapt a colour base model (--base rgb)"
            )
        values = np.asarray(image.array, dtype=np.float64)
        mapping = image.meta.mapping
        if image.meta.keep_mask is not None:  # padding at the range floor, as when denoising
            values = np.where(image.meta.keep_mask, mapping.low, values)
        # The hash covers pixel values and shapes only: never names, paths or headers.
        digest.update(str(values.shape).encode())
        digest.update(np.ascontiguousarray(values).tobytes())
        unit = np.clip(mapping.to_unit(values), 0.0, 1.0)
        for plane in _planes_of(unit, image.meta.layout):
            if plane.shape[-1] != channels:
                plane = np.repeat(plane, channels, axis=-1)
            planes.append(np.ascontiguousarray(plane, dtype=np.float32))
        modalities.append(_dicom_modality(image.meta.details))
        spacings.append(pixel_spacing_mm(image))
        images += 1
    if not planes:
        raise ValueError("no images found in the inputs")
    small = [plane.shape[:2] for plane in planes if min(plane.shape[:2]) < MIN_SIDE]
    if small:
        raise ValueError(
            f"images must be at least {MIN_SIDE} x {MIN_SIDE} pixels; found {small[0]}"
        )
    return Planes(planes, images, digest.hexdigest(), tuple(modalities), tuple(spacings))


def _dicom_modality(details: object) -> str | None:
    """The DICOM Modality of a read image (`io.dicom.DicomDetails`), None when not DICOM or
    not stated."""
    datasets = getattr(details, "datasets", None) or []
    modality = datasets[0].get("Modality") if datasets else None
    return str(modality) if modality else None


def hold_back(
    planes: Sequence[np.ndarray], fraction: float = HOLD_BACK_FRACTION
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training, held back): every fifth plane, evenly spread; one plane is split in rows.

    At most `MAX_TRAINING_PLANES` and `MAX_GUARD_PLANES`, evenly spread over the rest.

    Raises
    ------
    ValueError
        One plane too small to give both parts at least `MIN_SIDE` rows.
    """
    if len(planes) >= 2:
        count = max(1, round(fraction * len(planes)))
        held = set(np.linspace(0, len(planes) - 1, count + 2)[1:-1].round().astype(int).tolist())
        training = [plane for index, plane in enumerate(planes) if index not in held]
        guard = [planes[index] for index in sorted(held)]
    else:
        (plane,) = planes
        rows = max(MIN_SIDE, round(fraction * plane.shape[0]))
        if plane.shape[0] - rows < MIN_SIDE:
            raise ValueError(
                f"one image of {plane.shape[0]} rows is too small to hold back a part for the "
                f"guard: give at least {2 * MIN_SIDE} rows, or several images"
            )
        training, guard = [plane[:-rows]], [plane[-rows:]]

    return _spread(training, MAX_TRAINING_PLANES), _spread(guard, MAX_GUARD_PLANES)


def _spread(values: Sequence[np.ndarray], limit: int) -> list[np.ndarray]:
    """At most `limit` of `values`, evenly spread over them."""
    if len(values) <= limit:
        return list(values)
    return [values[int(index)] for index in np.linspace(0, len(values) - 1, limit).round()]


# --- levels, objective choice ----------------------------------------------------------------


def inference_level_map(
    plane: np.ndarray,
    level_map: str,
    pd_factor: int = 1,
    *,
    pixel_spacing_mm: float | None = None,
) -> np.ndarray:
    """The (H, W) noise level `NeuralDenoiser` tells a conditioned network for `plane` (H, W, C).

    The same rule as `NeuralDenoiser._run`: grey planes of a "signal-dependent" network get
    `blind_noise_map` where it finds signal-dependent noise; a "sub-images" network (adapted,
    `pd_factor`) one `sub_image_noise_level` per plane, a "flat-windows" one (trained on
    synthetic noise) one `flat_window_noise_std` per plane, a "local-flat-windows" one
    `local_noise_std_map` for grey planes (colour: one `flat_window_noise_std`), a "ct-physics"
    one `ct_noise_std_map` at `pixel_spacing_mm` for grey planes; every other
    plane one `blind_noise_level` for the whole plane.
    """
    grey = plane.shape[-1] == 1
    values = _values(plane)
    if level_map == "sub-images":
        return np.full(plane.shape[:2], sub_image_noise_level(values, pd_factor), np.float32)
    per_pixel = per_pixel_levels(level_map, pixel_spacing_mm)
    if grey and per_pixel is not None:
        return per_pixel(values)
    if level_map in ("flat-windows", "local-flat-windows", "ct-physics"):
        return np.full(plane.shape[:2], flat_window_noise_std(values), np.float32)
    if grey and level_map == "signal-dependent":
        found = blind_noise_map(values)
        if found is not None:
            return np.asarray(found, dtype=np.float32)
    return np.full(plane.shape[:2], blind_noise_level(values), dtype=np.float32)


@dataclass(frozen=True)
class NoiseMeasurement:
    """What `choose_pd_factor` measured: the stride chosen, the noise's correlation at lags 1 to
    `MAX_PD_FACTOR` (flattest windows), and the noise std read on the sub-images of strides 1,
    2, ... (`estimate.sub_image_noise_level`; for the card)."""

    pd_factor: int
    correlation: list[float]
    levels: list[float]


def choose_pd_factor(planes: Sequence[np.ndarray]) -> NoiseMeasurement:
    """The smallest PD stride at which the noise of `planes` is nearly white: its correlation,
    measured in the flattest windows, under `WHITE_CORRELATION` at that lag."""
    lags = tuple(range(1, MAX_PD_FACTOR + 1))
    correlation = np.mean([noise_autocorrelation(plane, lags) for plane in planes], axis=0)
    chosen = MAX_PD_FACTOR
    for lag, value in zip(lags, correlation, strict=True):
        if value < WHITE_CORRELATION:
            chosen = lag
            break
    side = min(min(plane.shape[:2]) for plane in planes)
    strides = [s for s in range(1, MAX_PD_FACTOR + 1) if side // s >= MIN_SUB_IMAGE]
    # For the card only: a few planes are enough, and a long series would pay 30 weak-texture
    # estimates per plane for nothing.
    sample = _spread(planes, MAX_GUARD_PLANES)
    levels = [
        float(np.mean([sub_image_noise_level(_values(plane), stride) for plane in sample]))
        for stride in strides
    ]
    return NoiseMeasurement(chosen, correlation.tolist(), levels)


def _values(plane: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W); colour planes as they are."""
    return plane[..., 0] if plane.shape[-1] == 1 else plane


# --- fine-tuning -----------------------------------------------------------------------------


def _sample_batch(
    planes: Sequence[np.ndarray],
    level_maps: Sequence[np.ndarray],
    patch: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    areas = np.array([plane.shape[0] * plane.shape[1] for plane in planes], dtype=np.float64)
    chosen = rng.choice(len(planes), size=BATCH, p=areas / areas.sum())
    patches, maps = [], []
    for index in chosen:
        plane, level = planes[index], level_maps[index]
        top = int(rng.integers(0, plane.shape[0] - patch + 1))
        left = int(rng.integers(0, plane.shape[1] - patch + 1))
        patches.append(plane[top : top + patch, left : left + patch].transpose(2, 0, 1))
        maps.append(level[None, top : top + patch, left : left + patch])
    return torch.from_numpy(np.stack(patches)), torch.from_numpy(np.stack(maps))


@dataclass(frozen=True)
class FineTuneResult:
    """What `fine_tune` did: steps, seconds, divergence, and when the kept weights were reached.

    ``best_seconds`` is None when no validation was given (the final weights are kept) and 0.0
    when no step improved on the starting weights.
    """

    steps: int
    seconds: float
    diverged: bool
    best_seconds: float | None = None
    best_loss: float | None = None


def validation_patches(
    planes: Sequence[np.ndarray],
    level_maps: Sequence[np.ndarray],
    patch: int,
    rng: np.random.Generator,
    count: int = VALIDATION_PATCHES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of `count` patches (and their level maps) from `planes`."""
    batches = [_sample_batch(planes, level_maps, patch, rng) for _ in range(count // BATCH)]
    return torch.cat([batch[0] for batch in batches]), torch.cat([batch[1] for batch in batches])


def validation_loss(network: PDCondUNet, patches: torch.Tensor, maps: torch.Tensor) -> float:
    """Neighbor2Neighbor's first term on fixed patches and fixed cells (`VALIDATION_SEED`).

    With the pairs' noise independent (what PD is for), its expectation is the error of the
    network's output against the *clean* neighbour plus the noise variance, a constant: lower
    is better, without a clean image.
    """
    network.eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        return float(neighbour_loss(network, patches, maps, generator, regularisation=0.0))


def patch_side(planes: Sequence[np.ndarray], pd_factor: int) -> int:
    """The training patch side for `planes`: `PATCH`, or less for small planes, a multiple of
    ``2 * pd_factor``; ValueError when the planes are too small for the factor."""
    factor = 2 * pd_factor
    side = min(min(plane.shape[:2]) for plane in planes)
    patch = min(PATCH, side // factor * factor)
    if patch < factor * 4:
        raise ValueError(f"images of {side} pixels are too small for PD factor {pd_factor}")
    return patch


def fine_tune(
    network: PDCondUNet,
    planes: Sequence[np.ndarray],
    level_maps: Sequence[np.ndarray],
    *,
    seconds: float,
    rng: np.random.Generator,
    learning_rate: float = LEARNING_RATE,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[AdaptProgress], None] | None = None,
    snapshots: Sequence[float] = (),
    on_snapshot: Callable[[float, PDCondUNet], None] | None = None,
) -> FineTuneResult:
    """Train `network` on patches of `planes` with `neighbour_loss` for `seconds` of wall clock.

    The clock is read before every step; a step that would end past the budget (judged by the
    longest step so far) is not started.  With `validation` patches (`validation_patches` of
    held-back planes), `validation_loss` is measured at the start, every `VALIDATE_SECONDS`
    and at the end, and the network ends with the weights that scored best (early stopping:
    in the benchmark the fine-tuning peaked after about a minute and then drifted towards
    removing structure).  `on_snapshot(seconds, network)` is called once the time passes each of
    `snapshots` (seconds) with the weights the run would end with then, for the benchmark's
    1-, 3- and 10-minute rows.
    """
    import copy

    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    patch = patch_side(planes, network.pd_factor)
    pending = sorted(snapshots)
    start = time.monotonic()
    best_state: dict[str, torch.Tensor] | None = None
    best_loss, best_seconds = math.inf, 0.0

    def validate() -> None:
        nonlocal best_state, best_loss, best_seconds
        if validation is None:
            return
        value = validation_loss(network, *validation)
        if math.isfinite(value) and value < best_loss:
            best_loss, best_seconds = value, time.monotonic() - start
            best_state = copy.deepcopy(network.state_dict())
        network.train()

    def current() -> PDCondUNet:
        if best_state is None:
            return network
        chosen = copy.deepcopy(network)
        chosen.load_state_dict(best_state)
        return chosen.eval()

    validate()
    longest, step, diverged, loss_value = 0.0, 0, False, float("nan")
    last_report, last_validation = -math.inf, time.monotonic() - start
    network.train()
    while True:
        now = time.monotonic() - start
        if now - last_validation >= VALIDATE_SECONDS:
            validate()
            last_validation = now = time.monotonic() - start
        while pending and now >= pending[0]:
            if on_snapshot is not None:
                on_snapshot(pending[0], current())
                network.train()
            pending.pop(0)
            now = time.monotonic() - start
        if now + longest > seconds:
            break
        began = time.monotonic()
        patches, maps = _sample_batch(planes, level_maps, patch, rng)
        optimizer.zero_grad(set_to_none=True)
        loss = neighbour_loss(network, patches, maps, generator)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            diverged = True
            break
        loss.backward()
        optimizer.step()
        step += 1
        longest = max(longest, time.monotonic() - began)
        elapsed = time.monotonic() - start
        if progress is not None and (elapsed - last_report >= 2.0):
            last_report = elapsed
            progress(AdaptProgress(step, elapsed, max(seconds - elapsed, 0.0), loss_value))
    if not diverged:
        validate()
    if best_state is not None and not diverged:
        network.load_state_dict(best_state)
    network.eval()
    spent = time.monotonic() - start
    if on_snapshot is not None:
        for moment in pending:  # budgets shorter than a snapshot: the final state stands for it
            on_snapshot(moment, network)
    if validation is None:
        return FineTuneResult(step, spent, diverged)
    return FineTuneResult(step, spent, diverged, round(best_seconds, 1), best_loss)


# --- the whole workflow ----------------------------------------------------------------------


def _base_checkpoint(base: str) -> tuple[Path, Any]:
    from meddenoise.checkpoint import CheckpointError, load_checkpoint

    if base not in SHIPPED_MODELS:
        raise ValueError(f"unknown base {base!r}; shipped models: {', '.join(SHIPPED_MODELS)}")
    path = shipped_weights(base)
    if path is None:
        raise ValueError(f"the shipped model {base!r} has no weights in this installation")
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    if checkpoint.model != "cond_unet":
        raise ValueError(f"{base} is a {checkpoint.model}; adaptation fine-tunes a cond_unet")
    return path, checkpoint


def denoiser_for(
    network: torch.nn.Module, level_map: str, name: str, pixel_spacing_mm: float | None = None
) -> NeuralDenoiser:
    """The network as `resolve` would run it from a checkpoint (fp32 on the CPU)."""
    return NeuralDenoiser(
        network,
        name=name,
        level_map=level_map,
        precision="fp32",
        device="cpu",
        pixel_spacing_mm=pixel_spacing_mm,
    )


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown (written beside the checkpoint)."""
    guard = card["guard"]
    lines = [
        f"# Adapted model: {card['kept']} weights of `{card['base']}`",
        "",
        f"- Base model: `{card['base']}` (weights SHA-256 `{card['base_sha256']}`)",
        f"- Objective: `{card['objective']}`, PD factor {card['pd_factor']}; the network is told "
        f"noise levels by the rule `{card['level_map']}`",
        f"- Noise std read on the sub-images of strides 1, 2, ...: "
        f"{card['noise_std_by_pd_factor']} (in [0, 1] units)",
        f"- Training budget: {card['minutes']} min (pd-n2n: 0 calibrates only); used "
        f"{card['seconds_used']} s, {card['steps']} steps",
        *_synthetic_lines(card.get("synthetic_noise")),
        f"- Inputs: {card['images']} images, {card['planes']['training']} planes for training, "
        f"{card['planes']['held_back']} held back for the guard",
        f"- Inputs' pixel data SHA-256: `{card['inputs_sha256']}`",
        f"- Written: {card['date']} by meddenoise {card['meddenoise']}",
        "",
        "## Guard (held-back images; lower is better for both figures)",
        "",
        "| | base | adapted |",
        "|---|---|---|",
        f"| method-noise score | {guard['method_noise_base']} | {guard['method_noise_adapted']} |",
        f"| the same above noise of the residual's spectrum | {guard['structure_base']} "
        f"| {guard['structure_adapted']} |",
        f"| residual correlation vs noise (mismatch) | {guard['correlation_mismatch_base']} "
        f"| {guard['correlation_mismatch_adapted']} |",
        f"| residual RMS / noise std | {guard['residual_ratio_base']} "
        f"| {guard['residual_ratio_adapted']} |",
        "",
        f"Noise correlation at lags 1, 2: {guard['noise_correlation']}.",
        "",
        f"Verdict: {card['verdict']}",
        "",
    ]
    return "\n".join(lines)


def _synthetic_lines(measured: dict[str, Any] | None) -> list[str]:
    """The synthetic objective's measurements as card lines (none for the other objectives)."""
    if not measured:
        return []
    return [
        f"- Noise measured in the flattest windows: std {measured['noise_std_measured']}, "
        f"correlation at lags 1-3 across {measured['noise_correlation_across_lags_1_to_3']}, "
        f"down {measured['noise_correlation_down_lags_1_to_3']}; trained on noise drawn with "
        f"that covariance at levels {measured['levels_trained']} (in [0, 1] units) added to "
        f"{measured['clean_images']}",
    ]


def _refuse_input_as_output(output: Path, inputs: Sequence[str | os.PathLike[str]]) -> None:
    target = output.resolve()
    for source in inputs:
        path = Path(source).resolve()
        if target == path or (path.is_dir() and path in target.parents and target.exists()):
            raise ValueError(f"{output}: would overwrite an input")


def adapt(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    base: str = "grey",
    minutes: float = DEFAULT_MINUTES,
    *,
    objective: str = "synthetic",
    pd_factor: int | None = None,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[AdaptProgress], None] | None = None,
) -> AdaptResult:
    """Fine-tune shipped model `base` on the noisy images `inputs`; write `output`.

    Parameters
    ----------
    inputs : sequence of paths
        The user's own noisy images: files, folders, DICOM series (no clean images needed).
    output : path
        The checkpoint to write (``.safetensors``); a Markdown card is written beside it.
    base : str
        A shipped model: ``grey``, ``rgb`` or ``ct-lowdose``.
    minutes : float
        Wall-clock budget of the training (`DEFAULT_MINUTES`).  With "pd-n2n", 0 calibrates
        only: the base weights on the measured PD sub-images, told the level measured there.
        Reading, measuring and the guard take seconds on top.
    objective : {"synthetic", "pd-n2n", "n2n"}
        "synthetic" (the default): the noise's covariance measured on the images, the base
        network trained on its own clean training images plus noise drawn with that covariance
        (`meddenoise.adapt.synthetic`); "pd-n2n": Neighbor2Neighbor on pixel-shuffle
        sub-images; "n2n": Neighbor2Neighbor on the image.
    pd_factor : int, optional
        The PD stride for "pd-n2n"; None measures the noise (`choose_pd_factor`) and picks the
        smallest stride at which it is nearly white (1 for white noise).
    learning_rate : float
        Adam's step size.
    seed : int
        Seeds the one generator every random choice draws from.
    force : bool
        Write the adapted weights even when the guard finds them worse.
    progress : callable, optional
        Called with an `AdaptProgress` every two seconds or so.

    Returns
    -------
    AdaptResult

    Raises
    ------
    ValueError
        Bad inputs, base, budget or objective, with a message that says which.
    """
    from meddenoise.checkpoint import save_checkpoint

    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"{output}: the output must be a .safetensors file")
    if not (math.isfinite(minutes) and minutes >= 0):
        raise ValueError(f"minutes must be a number >= 0, got {minutes}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective in ("n2n", "synthetic") and minutes == 0:
        raise ValueError(f"objective {objective} trains: give it a budget (minutes > 0)")
    if pd_factor is not None and not (isinstance(pd_factor, int) and pd_factor >= 1):
        raise ValueError(f"pd_factor must be an integer >= 1, got {pd_factor!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
    _refuse_input_as_output(output, inputs)
    base_path, checkpoint = _base_checkpoint(base)
    level_map = checkpoint.level_map
    arguments = dict(checkpoint.arguments)
    read = read_planes(inputs, channels=int(arguments.get("channels", 1)))
    training, held_back = hold_back(read.planes)
    rng = np.random.default_rng(seed)
    measured = choose_pd_factor(training)
    if objective in ("n2n", "synthetic"):
        factor = 1
    elif pd_factor is not None:
        factor = pd_factor
    else:
        factor = measured.pd_factor
    logger.info(
        "adapting %s on %d images (%d planes, %d held back), %s with PD factor %d",
        base, read.images, len(training), len(held_back), objective, factor,
    )  # fmt: skip
    network = PDCondUNet(**arguments, pd_factor=factor)
    network.load_state_dict(checkpoint.network.state_dict())
    # White noise, measured: the base model was trained on it, and Neighbor2Neighbor
    # fine-tuning of a supervised model cost 1.6 dB on white noise in the tuning runs
    # (docs/adapt.md), so the automatic choice adapts nothing; --objective n2n still forces it.
    white = (
        objective == "synthetic" or (objective == "pd-n2n" and pd_factor is None)
    ) and measured.pd_factor == 1
    # The adapted network is told the level measured on its own sub-images, where the noise is
    # white: the base model's estimate on the whole image reads correlated noise as signal; or,
    # trained on synthetic noise, the level measured as in its training.
    adapted_levels = {"pd-n2n": "sub-images", "synthetic": level_map_for(read.modalities)}.get(
        objective, level_map
    )
    spacing = read.pixel_spacing_mm if adapted_levels == "ct-physics" else None
    if adapted_levels == "ct-physics":
        logger.warning(
            "CT: levels follow the body by physics at %s mm per pixel; on the project's "
            "benchmark adaptation gained 1.4-1.9 dB, but a held-back slice unlike the training "
            "slices lost up to 1.4 dB at noise of a few HU (docs/adapt.md); compare the "
            "residual pictures before using the result",
            "the default 0.7 (no file states one)" if spacing is None else f"{spacing:.3g}",
        )
    tuned = FineTuneResult(0, 0.0, False)
    synthetic: dict[str, Any] = {}
    if not white and objective == "synthetic":
        from meddenoise.adapt.synthetic import train_for_measured_noise

        def report_step(step: int, elapsed: float, remaining: float, loss: float) -> None:
            if progress is not None:
                progress(AdaptProgress(step, elapsed, remaining, loss))

        trained, synthetic = train_for_measured_noise(
            network,
            checkpoint,
            [_values(plane) for plane in training],
            seconds=minutes * 60.0,
            rng=rng,
            learning_rate=learning_rate,
            progress=report_step,
            level_map=adapted_levels,
            pixel_spacing_mm=spacing,
            level_planes=[_values(plane) for plane in held_back],
        )
        tuned = FineTuneResult(trained.steps, trained.seconds, trained.diverged)
    elif not white and minutes > 0:
        level_maps = [
            inference_level_map(plane, adapted_levels, factor, pixel_spacing_mm=spacing)
            for plane in training
        ]
        patch = patch_side([*training, *held_back], factor)
        held_maps = [
            inference_level_map(plane, adapted_levels, factor, pixel_spacing_mm=spacing)
            for plane in held_back
        ]
        tuned = fine_tune(
            network,
            training,
            level_maps,
            seconds=minutes * 60.0,
            rng=rng,
            learning_rate=learning_rate,
            validation=validation_patches(held_back, held_maps, patch, rng),
            progress=progress,
        )
    steps, spent, diverged = tuned.steps, tuned.seconds, tuned.diverged
    report = compare(
        denoiser_for(checkpoint.network, level_map, base),
        denoiser_for(network, adapted_levels, "adapted", spacing),
        # Denoisers take grey images as (H, W): (H, W, 1) would read as a volume.
        [plane[..., 0] if plane.shape[-1] == 1 else plane for plane in held_back],
        noise_levels=per_pixel_levels(adapted_levels, spacing),
    )
    if diverged and not report.worse:
        report = GuardReport(**{**report.__dict__, "worse": True, "reason": "the loss diverged"})
    keep_adapted = (force or not report.worse) and not white
    kept = "adapted" if keep_adapted else "base"
    if white:
        verdict = (
            f"the noise measured white (correlation {measured.correlation[0]:.2f} at lag 1): the "
            "base model was trained for white noise and was kept; --objective n2n fine-tunes "
            "anyway"
        )
    elif not report.worse:
        verdict = "the adapted model is not worse than the base model on the held-back images"
    elif force:
        verdict = f"the adapted model is worse ({report.reason}); written anyway (forced)"
    else:
        verdict = f"the adapted model is worse ({report.reason}); the base model was kept"
    card: dict[str, Any] = {
        "base": base,
        "base_sha256": file_digest(base_path),
        "objective": objective,
        "pd_factor": factor,
        "noise_std_by_pd_factor": [round(value, 5) for value in measured.levels],
        "noise_correlation_lags_1_to_3": [round(value, 4) for value in measured.correlation],
        "level_map": adapted_levels if keep_adapted else level_map,
        **({"pixel_spacing_mm": spacing} if spacing is not None else {}),
        **({"synthetic_noise": synthetic} if synthetic else {}),
        "learning_rate": learning_rate,
        "minutes": minutes,
        "seconds_used": round(spent, 1),
        "steps": steps,
        "kept_weights_at_seconds": tuned.best_seconds,
        "images": read.images,
        "planes": {"training": len(training), "held_back": len(held_back)},
        "inputs_sha256": read.sha256,
        "guard": report.as_dict(),
        "kept": kept,
        "verdict": verdict,
        "seed": seed,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "meddenoise": __version__,
    }
    # The checkpoint says how its network is told noise levels, as a trained one does
    # (`Checkpoint.level_map` reads config.noise.level_map).
    written_levels = adapted_levels if keep_adapted else level_map
    noise: dict[str, Any] = {"level_map": written_levels}
    if keep_adapted and spacing is not None:
        noise["pixel_spacing_mm"] = spacing
    extra = {"config": {"noise": noise}, "adaptation": card}
    if keep_adapted and factor == 1:  # PDCondUNet at stride 1 is a CondUNet, weights and all
        save_checkpoint(output, network, model="cond_unet", arguments=arguments, extra=extra)
    elif keep_adapted:
        save_checkpoint(
            output,
            network,
            model="pd_cond_unet",
            arguments={**arguments, "pd_factor": factor},
            extra=extra,
        )
    else:
        save_checkpoint(
            output, checkpoint.network, model="cond_unet", arguments=arguments, extra=extra
        )
    card_path = output.with_suffix(".md")
    with atomic_output(card_path) as handle:
        handle.write(card_markdown(card).encode())
        handle.write(("\n```json\n" + json.dumps(card, indent=2) + "\n```\n").encode())
    if kept == "base":
        logger.warning("%s", verdict)
    return AdaptResult(output, card_path, kept, report, card)
