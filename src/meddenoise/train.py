"""Training as small functions: data per epoch, one epoch (supervised, GAN, self-supervised),
evaluation, checkpoints, and `fit`, which strings them together.

- Seeding happens once, in `fit`, from the config's seed: torch's generator for the initial
  weights; every epoch's patches and noise come from ``np.random.default_rng([seed, epoch])``,
  so a resumed run draws exactly what an uninterrupted one would.
- Checkpoints: ``best.safetensors`` (by validation PSNR, or by validation loss when there is no
  clean reference), ``last.safetensors`` and ``last.resume.pt`` (optimizer, scheduler, epoch;
  read with ``weights_only=True``), plus ``metrics.csv``.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meddenoise import metrics
from meddenoise.checkpoint import (
    load_resume_state,
    read_metadata,
    resume_path,
    save_checkpoint,
    save_resume_state,
)
from meddenoise.config import TrainConfig, config_to_dict
from meddenoise.data import (
    DataError,
    add_noise,
    load_images,
    load_paired,
    sample_blindly_levelled,
    sample_patches,
)
from meddenoise.losses import adversarial_loss, build_loss
from meddenoise.models import PatchDiscriminator, build_model

logger = logging.getLogger(__name__)
VALIDATION_STREAM = 1_000_003  # a fixed, separate random stream for validation noise


@dataclass
class TrainingData:
    """What one run trains and validates on (all float32 in [0, 1])."""

    mode: str
    train_images: list[np.ndarray]
    train_partners: list[np.ndarray] | None  # paired mode: the clean partner of each image
    val_noisy: list[np.ndarray]  # (C, H, W)
    val_clean: list[np.ndarray] | None  # None: no clean reference (self-supervised)
    val_levels: Sequence[float | np.ndarray]  # what the network is told: a std or a (1, H, W) map
    summary: dict[str, Any] = field(default_factory=dict)
    # The true noise std of each validation crop, std(noisy - clean), for the classical baselines
    # (the network's level can be a blind estimate or a map); empty: use the levels' RMS.
    val_sigmas: list[float] = field(default_factory=list)
    # Self-supervised: the noise level estimated once per training image (for conditioned nets).
    train_levels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # Low-dose CT: the clean sinogram of each training image, computed on first use.
    sinograms: list[np.ndarray] = field(default_factory=list)


def _central_crop(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    return image[top : top + size, left : left + size]


def _ct_noisy(
    clean: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    unit_sinogram: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """A low-dose reconstruction of `clean` (H, W, 1) and its blind noise estimate.

    Dose and pixel spacing are drawn from the config's ranges.  The noise-free sinogram is
    dose-independent and linear in the spacing: pass a cached one computed at 1 mm spacing
    (`unit_sinogram`) to skip the forward projection.  The level handed to a conditioned network
    is the same blind estimate inference makes on the whole slice (FBP noise is correlated, so the
    estimate is not the noise std; training on it keeps training and use consistent).
    """
    from meddenoise.inference import blind_noise_level
    from meddenoise.noise import LowDoseCT

    model = LowDoseCT(
        dose_fraction=rng.uniform(*config.noise.dose_fraction_range),
        pixel_spacing_mm=rng.uniform(*config.noise.pixel_spacing_range),
    )
    if unit_sinogram is None:
        sinogram = model.sinogram(clean[..., 0])
    else:
        sinogram = unit_sinogram * model.pixel_spacing_mm
    noisy = model.noisy_from_sinogram(sinogram, clean.shape[:2], rng)
    noisy = np.asarray(noisy, dtype=np.float32)
    return noisy[..., None], blind_noise_level(noisy)


def prepare_data(config: TrainConfig) -> TrainingData:
    """Load and map the images; build the fixed validation set."""
    from meddenoise.inference import blind_noise_level

    data = config.data
    if data.mode == "paired":
        assert data.root is not None
        train = load_paired(data.root, "train", data)
        val = load_paired(data.root, "val", data)
        val_noisy = [_central_crop(image, data.val_size).transpose(2, 0, 1) for image in val.low]
        val_clean = [_central_crop(image, data.val_size).transpose(2, 0, 1) for image in val.high]
        levels = [
            float(np.std(noisy - clean)) for noisy, clean in zip(val_noisy, val_clean, strict=True)
        ]
        return TrainingData(
            "paired",
            train.low,
            train.high,
            val_noisy,
            val_clean,
            levels,
            {"train_pairs": len(train.low), "val_pairs": len(val.low), "root": str(data.root)},
        )
    train_images = load_images(data.train, data)
    val_sources = load_images(data.val, data) if data.val else []
    if data.mode == "self-supervised":
        from meddenoise.estimate import estimate_sigma

        val_noisy = [
            _central_crop(image, data.val_size).transpose(2, 0, 1) for image in val_sources
        ]
        return TrainingData(
            "self-supervised",
            train_images,
            None,
            val_noisy,
            None,
            [float(estimate_sigma(image[0])) for image in val_noisy],
            {"train_images": len(train_images), "val_images": len(val_noisy), "train": data.train},
            train_levels=np.array(
                [
                    estimate_sigma(image[..., 0] if image.shape[-1] == 1 else image)
                    for image in train_images
                ],
                dtype=np.float32,
            ),
        )
    if not val_sources:
        raise DataError("data.val: synthetic training needs validation images")
    wholes = [image for image in val_sources for _ in range(data.val_draws)]
    val_clean = [_central_crop(image, data.val_size) for image in wholes]
    val_noisy, levels = [], []
    for index, clean in enumerate(val_clean):
        rng = np.random.default_rng([config.seed, VALIDATION_STREAM, index])
        if config.noise.kind == "low-dose-ct":
            # CT noise depends on the whole slice (every ray crosses it): simulate it, then crop,
            # as the benchmark does.
            noisy_whole, level = _ct_noisy(wholes[index], config, rng)
            noisy = _central_crop(noisy_whole, data.val_size)
        else:
            noisy_batch, level_batch = add_noise(clean.transpose(2, 0, 1)[None], config.noise, rng)
            noisy, level = noisy_batch[0].transpose(1, 2, 0), level_batch[0]
            level = float(level) if level.ndim == 0 else level  # a (1, H, W) map
            if config.noise.level_source == "estimate":  # what inference tells the network
                level = blind_noise_level(noisy[..., 0] if noisy.shape[-1] == 1 else noisy)
        val_noisy.append(noisy.transpose(2, 0, 1))
        levels.append(level)
    return TrainingData(
        "synthetic",
        train_images,
        None,
        val_noisy,
        [clean.transpose(2, 0, 1) for clean in val_clean],
        levels,
        {
            "train_images": len(train_images),
            "val_images": len(val_sources),
            "val_draws": data.val_draws,
            "train": data.train,
            "val": data.val,
        },
        val_sigmas=[
            float(np.std(noisy - clean.transpose(2, 0, 1)))
            for noisy, clean in zip(val_noisy, val_clean, strict=True)
        ],
    )


def epoch_batches(
    data: TrainingData, config: TrainConfig, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """(noisy, clean or None, levels) batches for one epoch, seeded by the epoch.

    Levels are what a conditioned network is told: (B,) stds (per patch, true or with
    ``noise.level_source: estimate`` the blind estimate on a window around it; per slice for CT,
    where it is the blind estimate) or (B, 1, H, W) maps (``noise.level_map: signal-dependent``).
    """
    rng = np.random.default_rng([config.seed, epoch])
    size = config.data.patch_size
    count = config.data.patches_per_epoch
    augment = config.data.augment
    if data.mode == "paired":
        assert data.train_partners is not None
        noisy, clean, _ = sample_patches(
            data.train_images, count, size, rng, augment=augment, partners=data.train_partners
        )
        assert clean is not None
        levels = np.std(noisy - clean, axis=(1, 2, 3)).astype(np.float32)
    elif data.mode == "self-supervised":
        noisy, clean, sources = sample_patches(data.train_images, count, size, rng, augment=augment)
        levels = data.train_levels[sources]
    elif config.noise.kind == "low-dose-ct":
        if not data.sinograms:  # computed once per run: a pool of clean sinograms at 1 mm
            from meddenoise.noise import LowDoseCT

            projector = LowDoseCT(dose_fraction=1.0, pixel_spacing_mm=1.0)
            data.sinograms = [projector.sinogram(image[..., 0]) for image in data.train_images]
        draws = [
            _ct_noisy(image, config, rng, sinogram)
            for image, sinogram in zip(data.train_images, data.sinograms, strict=True)
        ]
        noisy, clean, sources = sample_patches(
            [noisy for noisy, _ in draws],
            count,
            size,
            rng,
            augment=augment,
            partners=data.train_images,
        )
        assert clean is not None
        levels = np.array([level for _, level in draws], dtype=np.float32)[sources]
    elif config.noise.level_source == "estimate":
        noisy, clean, levels = sample_blindly_levelled(
            data.train_images, count, size, config.noise, rng, augment=augment
        )
    else:
        clean, _, _ = sample_patches(data.train_images, count, size, rng, augment=augment)
        noisy, levels = add_noise(clean, config.noise, rng)
    if config.noise.level_jitter > 0:
        # The network is told a slightly wrong level, as a blind estimate would be.
        factors = np.exp(rng.normal(0.0, config.noise.level_jitter, len(levels)))
        levels = (levels * factors.reshape(-1, *[1] * (levels.ndim - 1))).astype(np.float32)
    order = rng.permutation(count)
    for first in range(0, count, config.batch_size):
        chosen = order[first : first + config.batch_size]
        yield (
            torch.from_numpy(noisy[chosen]),
            None if clean is None else torch.from_numpy(clean[chosen]),
            torch.from_numpy(levels[chosen]),
        )


def run_network(network: nn.Module, noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Forward pass; conditioned networks get a noise map: each sample's level (levels (N,)) or
    the given per-pixel maps (levels (N, 1, H, W))."""
    if getattr(network, "conditioned", False):
        if levels.ndim == 4:
            return network(noisy, levels.to(noisy.dtype))
        noise_map = levels.view(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[-2:]).to(noisy.dtype)
        return network(noisy, noise_map)
    return network(noisy)


def train_one_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
    loss_function: Any,
    *,
    bf16: bool = False,
    clip_gradients: float | None = None,
) -> float:
    """Supervised epoch: minimise loss(network(noisy), clean); returns the mean loss.

    With `bf16` the forward pass runs under bf16 autocast; the loss is computed in fp32.
    """
    network.train()
    total, count = 0.0, 0
    for noisy, clean, levels in batches:
        assert clean is not None
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = run_network(network, noisy, levels)
        loss = loss_function(prediction.float(), clean)
        loss.backward()
        if clip_gradients is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip_gradients)
        optimizer.step()
        total += float(loss.detach()) * len(noisy)
        count += len(noisy)
    return total / max(count, 1)


def neighbour_subsample(
    images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor's sub-sampler (Huang et al., CVPR 2021).

    In every 2 x 2 cell pick one pixel at random for the first sub-image and one of its two
    horizontal/vertical neighbours for the second: two half-size images with independent noise
    and nearly the same signal.
    """
    batch, channels, height, width = images.shape
    height, width = height // 2 * 2, width // 2 * 2
    cells = images[..., :height, :width].reshape(batch, channels, height // 2, 2, width // 2, 2)
    cells = cells.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, height // 2, width // 2, 4)
    first = torch.randint(0, 4, (batch, 1, height // 2, width // 2, 1), generator=generator)
    # Neighbours in the cell laid out [0 1; 2 3]: 0-1, 0-2, 1-3, 2-3.
    neighbours = torch.tensor([[1, 2], [0, 3], [0, 3], [1, 2]])
    pick = torch.randint(0, 2, first.shape, generator=generator)
    second = neighbours[first.squeeze(-1), pick.squeeze(-1)].unsqueeze(-1)
    expand = (-1, channels, -1, -1, -1)
    sub_first = torch.gather(cells, 4, first.expand(*expand)).squeeze(-1)
    sub_second = torch.gather(cells, 4, second.expand(*expand)).squeeze(-1)
    return sub_first, sub_second


def train_one_epoch_self_supervised(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
    generator: torch.Generator,
    regularisation: float = 1.0,
) -> float:
    """Neighbor2Neighbor epoch on noisy patches only; returns the mean loss."""
    network.train()
    total, count = 0.0, 0
    for noisy, _, levels in batches:
        state = generator.get_state()
        first, second = neighbour_subsample(noisy, generator)
        with torch.no_grad():
            full = run_network(network, noisy, levels)
        generator.set_state(state)  # the same cells for the denoised image
        full_first, full_second = neighbour_subsample(full, generator)
        optimizer.zero_grad(set_to_none=True)
        prediction = run_network(network, first, levels)
        difference = prediction - second
        loss = torch.mean(difference**2) + regularisation * torch.mean(
            (difference - (full_first - full_second)) ** 2
        )
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(noisy)
        count += len(noisy)
    return total / max(count, 1)


def train_one_epoch_gan(
    generator_network: nn.Module,
    discriminator: nn.Module,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
    config: TrainConfig,
) -> float:
    """pix2pix epoch: the discriminator sees (noisy, clean) vs (noisy, denoised); the generator
    minimises adversarial + weighted L1.  Returns the generator's mean loss."""
    assert config.gan is not None
    generator_optimizer, discriminator_optimizer = optimizers
    generator_network.train()
    discriminator.train()
    total, count = 0.0, 0
    for noisy, clean, levels in batches:
        assert clean is not None
        fake = run_network(generator_network, noisy, levels)
        discriminator_optimizer.zero_grad(set_to_none=True)
        real_logits = discriminator(noisy, clean)
        fake_logits = discriminator(noisy, fake.detach())
        discriminator_loss = 0.5 * (
            adversarial_loss(real_logits, real=True) + adversarial_loss(fake_logits, real=False)
        )
        discriminator_loss.backward()
        discriminator_optimizer.step()
        generator_optimizer.zero_grad(set_to_none=True)
        fooled = discriminator(noisy, fake)
        generator_loss = config.gan.adversarial_weight * adversarial_loss(
            fooled, real=True
        ) + config.gan.reconstruction_weight * torch.mean(torch.abs(fake - clean))
        generator_loss.backward()
        generator_optimizer.step()
        total += float(generator_loss.detach()) * len(noisy)
        count += len(noisy)
    return total / max(count, 1)


def channels_last(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) for one channel, (H, W, 3) for three (the metrics' layouts)."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


@torch.no_grad()
def evaluate(network: nn.Module, data: TrainingData) -> dict[str, float]:
    """Validation metrics: PSNR, SSIM, MSE (data range 1) against clean references, means over
    images.  Without references (self-supervised) only the MSE to the noisy input is reported."""
    network.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "mse": []}
    for index, noisy in enumerate(data.val_noisy):
        tensor = torch.from_numpy(np.ascontiguousarray(noisy))[None]
        level = torch.as_tensor(np.asarray(data.val_levels[index], dtype=np.float32))[None]
        output = run_network(network, tensor, level)[0].numpy()
        if data.val_clean is None:
            scores["mse"].append(metrics.mse(noisy, output))
            continue
        clean = data.val_clean[index]
        scores["psnr"].append(metrics.psnr(clean, output, data_range=1.0))
        scores["ssim"].append(
            metrics.ssim(channels_last(clean), channels_last(output), data_range=1.0)
        )
        scores["mse"].append(metrics.mse(clean, output))
    return {key: float(np.mean(values)) for key, values in scores.items() if values}


def oracle_sigma(data: TrainingData, index: int) -> float:
    """The true noise std of validation crop `index` (for classical methods), else the RMS of
    the level the network is given."""
    if data.val_sigmas:
        return data.val_sigmas[index]
    return float(np.sqrt(np.mean(np.square(data.val_levels[index]))))


def validation_baselines(data: TrainingData, methods: list[str]) -> dict[str, float]:
    """Validation PSNR of the noisy inputs ("psnr") and of each classical method in `methods`
    (given the true noise std of each crop, `oracle_sigma`), which the trained network should
    beat."""
    from meddenoise.classical import make_denoiser

    if data.val_clean is None:
        return {}
    scores: dict[str, list[float]] = {"psnr": []}
    for index, (clean, noisy) in enumerate(zip(data.val_clean, data.val_noisy, strict=True)):
        scores["psnr"].append(metrics.psnr(clean, noisy, data_range=1.0))
        for method in methods:
            denoiser = make_denoiser(method, sigma=oracle_sigma(data, index))
            denoised = denoiser(channels_last(noisy))
            denoised = denoised[None] if denoised.ndim == 2 else denoised.transpose(2, 0, 1)
            scores.setdefault(f"{method}_psnr", []).append(
                metrics.psnr(clean, denoised, data_range=1.0)
            )
    return {key: float(np.mean(values)) for key, values in scores.items()}


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.learning_rate * 0.01
        )
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(config.epochs // 3, 1), gamma=0.5
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def save_gan_figure(path: Path, network: nn.Module, data: TrainingData) -> None:
    """noisy | denoised | clean of the first validation image, as the GAN reference shows."""
    from meddenoise.report import save_panels

    with torch.no_grad():
        noisy = data.val_noisy[0]
        level = torch.as_tensor(np.asarray(data.val_levels[0], dtype=np.float32))[None]
        denoised = run_network(network.eval(), torch.from_numpy(noisy)[None], level)[0].numpy()
    pictures = [("noisy", noisy), ("denoised", denoised)]
    if data.val_clean is not None:
        pictures.append(("clean", data.val_clean[0]))
    panels = [(title, channels_last(picture)) for title, picture in pictures]
    save_panels(path, panels, window=(0.0, 1.0))


def initial_weights(
    source: str, model: str, arguments: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Weights to fine-tune from: a checkpoint path or a shipped model name (same network).

    A grey cond_unet may start a colour one (`arguments` with more channels): its weights are
    widened by `widen_grey_weights`, so a colour model starts from everything the grey one learnt.
    """
    from safetensors.torch import load_file

    from meddenoise.checkpoint import CheckpointError
    from meddenoise.pipeline import SHIPPED_WEIGHTS, shipped_weights

    path = shipped_weights(source) if source in SHIPPED_WEIGHTS else Path(source)
    if path is None or not path.is_file():
        raise CheckpointError(f"init: no weights at {source!r}")
    recorded = read_metadata(path)["model"]
    if recorded != model:
        raise CheckpointError(f"init: {source} holds a {recorded}, the config trains a {model}")
    state = load_file(str(path))
    channels = int((arguments or {}).get("channels", 1))
    if model == "cond_unet" and channels > 1 and state["head.weight"].shape[1] == 8:
        from meddenoise.models.cond_unet import widen_grey_weights

        logger.info("init: widening the grey %s weights to %d channels", source, channels)
        state = widen_grey_weights(state, channels)
    return state


@dataclass
class FitResult:
    best: Path
    last: Path
    history: list[dict[str, float]]
    baseline: dict[str, float]


def fit(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train as `config` says; resume from ``last.resume.pt`` when `resume` is true.

    `stop_after` ends this run after that many epochs (a time-boxed session); the schedule is
    still the one for `config.epochs`, so a later ``resume=True`` continues exactly.
    """
    from tqdm import tqdm

    torch.manual_seed(config.seed)  # the one place seeding happens: initial weights
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config)
    network = build_model(config.model.name, **config.model.arguments)
    network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = _scheduler(optimizer, config)
    if config.init is not None and not resume:
        network.load_state_dict(
            initial_weights(config.init, config.model.name, dict(config.model.arguments))
        )
    discriminator = discriminator_optimizer = None
    if config.gan is not None:
        discriminator = PatchDiscriminator(channels=config.data.channels)
        discriminator_optimizer = torch.optim.Adam(
            discriminator.parameters(),
            lr=config.gan.discriminator_learning_rate,
            betas=(0.5, 0.999),
        )
    loss_function = build_loss(config.loss)
    self_generator = torch.Generator().manual_seed(config.seed)
    best_path, last_path = output / "best.safetensors", output / "last.safetensors"
    history: list[dict[str, float]] = []
    start_epoch, best_score, stale = 0, -math.inf, 0
    if resume:
        from safetensors.torch import load_file

        state = load_resume_state(resume_path(last_path))
        network.load_state_dict(load_file(str(last_path)))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self_generator.set_state(state["self_supervised_generator"])
        if discriminator is not None and discriminator_optimizer is not None:
            discriminator.load_state_dict(state["discriminator"])
            discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        start_epoch, best_score, stale = state["epoch"], state["best_score"], state["stale"]
        history = list(state["history"])
    baseline = validation_baselines(data, config.baselines)
    for key, value in baseline.items():
        logger.info("validation baseline %s: %.3f", key, value)
    log_path = output / "metrics.csv"
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    for epoch in tqdm(
        range(start_epoch, config.epochs),
        desc="epochs",
        disable=not show,
        initial=start_epoch,
        total=config.epochs,
    ):
        epoch_start = time.perf_counter()
        batches = epoch_batches(data, config, epoch)
        if discriminator is not None and discriminator_optimizer is not None:
            train_loss = train_one_epoch_gan(
                network, discriminator, (optimizer, discriminator_optimizer), batches, config
            )
        elif data.mode == "self-supervised":
            train_loss = train_one_epoch_self_supervised(
                network, optimizer, batches, self_generator
            )
        else:
            train_loss = train_one_epoch(
                network,
                optimizer,
                batches,
                loss_function,
                bf16=config.precision == "bf16",
                clip_gradients=config.clip_gradients,
            )
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        scores = evaluate(network, data) if data.val_noisy else {}
        # Without a clean reference the lowest validation (or training) loss wins.
        score = scores["psnr"] if "psnr" in scores else -scores.get("mse", train_loss)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in scores.items()},
            "learning_rate": learning_rate,
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(row)
        logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        extra = {
            "config": config_to_dict(config),
            "metrics": {**row, **{f"baseline_{key}": value for key, value in baseline.items()}},
            "seed": config.seed,
            "data": data.summary,
            "noise": config.noise.model_dump(mode="json")
            if data.mode == "synthetic"
            else data.mode,
            "epoch": epoch + 1,
            "wall_seconds": time.perf_counter() - started,
        }
        model_arguments = dict(config.model.arguments)
        if score > best_score:
            best_score, stale = score, 0
            save_checkpoint(
                best_path, network, model=config.model.name, arguments=model_arguments, extra=extra
            )
        else:
            stale += 1
        save_checkpoint(
            last_path, network, model=config.model.name, arguments=model_arguments, extra=extra
        )
        resume_state: dict[str, Any] = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "self_supervised_generator": self_generator.get_state(),
            "epoch": epoch + 1,
            "best_score": best_score,
            "stale": stale,
            "history": history,
        }
        if discriminator is not None and discriminator_optimizer is not None:
            resume_state["discriminator"] = discriminator.state_dict()
            resume_state["discriminator_optimizer"] = discriminator_optimizer.state_dict()
            if (epoch + 1) % config.gan.figure_every == 0:  # type: ignore[union-attr]
                save_gan_figure(output / "figures" / f"epoch_{epoch + 1:04d}.png", network, data)
        save_resume_state(resume_path(last_path), resume_state)
        _write_log(log_path, history)
        if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
            break
        if config.early_stopping is not None and stale >= config.early_stopping:
            logger.info("early stopping after %d epochs without improvement", stale)
            break
    return FitResult(best_path, last_path, history, baseline)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    from meddenoise.io.base import atomic_write_with

    fields = sorted({key for row in history for key in row}, key=lambda key: (key != "epoch", key))

    def write(target: Path) -> None:
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)

    atomic_write_with(path, write)


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """Model, epoch and validation metrics recorded in a checkpoint."""
    metadata = read_metadata(path)
    return {
        "model": metadata["model"],
        "epoch": metadata.get("epoch"),
        "metrics": metadata.get("metrics"),
    }
