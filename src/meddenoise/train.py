"""Training as small functions: data per epoch, one epoch (supervised, GAN, self-supervised),
evaluation, checkpoints, and `fit`, which strings them together.

- Seeding happens once, in `fit`, from the config's seed: torch's, numpy's and Python's global
  generators (torch's gives the initial weights and the GAN generator's dropout); every epoch's
  patches and noise come from ``np.random.default_rng([seed, epoch])``.  The global generators'
  states go into the resume state after every epoch and come back on resume, so a resumed run
  draws exactly what an uninterrupted one would.
- Provenance: when a run starts, `fit` records the source commit and whether the tree was dirty,
  walks the ``init`` chain (`meddenoise.splits.init_lineage`) and refuses a validation set that
  any ancestor trained on; all of it goes into every checkpoint of the run.
- Checkpoints: ``best.safetensors`` (by validation PSNR, or by validation loss when there is no
  clean reference), ``last.safetensors`` and ``last.resume.safetensors`` (optimizer, scheduler,
  epoch, random states: tensors in safetensors, the rest JSON; nothing unpickled), plus
  ``metrics.csv``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meddenoise import distributed, metrics
from meddenoise.checkpoint import (
    global_random_states,
    load_resume_state,
    read_metadata,
    restore_global_random_states,
    resume_path,
    save_checkpoint,
    save_resume_state,
    seed_global_generators,
)
from meddenoise.config import TrainConfig, config_to_dict
from meddenoise.data import (
    TrainingData,
    channels_last,
    epoch_batches,
    oracle_sigma,
    prepare_data,
)
from meddenoise.inference import resolve_precision
from meddenoise.io.base import atomic_write_csv
from meddenoise.losses import adversarial_loss, build_loss, neighbour_subsample
from meddenoise.methods import initial_weights
from meddenoise.models import PatchDiscriminator, build_model
from meddenoise.splits import resumed_record, start_record

logger = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]


def as_tensors(
    batches: Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]],
) -> Iterator[Batch]:
    """`data.epoch_batches`' numpy (noisy, clean or None, levels) as tensors sharing memory."""
    for noisy, clean, levels in batches:
        yield (
            torch.from_numpy(noisy),
            None if clean is None else torch.from_numpy(clean),
            torch.from_numpy(levels),
        )


def run_network(network: nn.Module, noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Forward pass; conditioned networks get a noise map: each sample's level (levels (N,)) or
    the given per-pixel maps (levels (N, 1, H, W))."""
    if getattr(getattr(network, "module", network), "conditioned", False):  # DDP wraps it
        if levels.ndim == 4:
            return network(noisy, levels.to(noisy.dtype))
        noise_map = levels.view(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[-2:]).to(noisy.dtype)
        return network(noisy, noise_map)
    return network(noisy)


def train_one_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
    loss_function: Any,
    *,
    bf16: bool = False,
    clip_gradients: float | None = None,
) -> float:
    """Supervised epoch: minimise loss(network(noisy), clean); returns the mean loss.

    With `bf16` the forward pass runs under bf16 autocast; the loss is computed in fp32 and told
    the levels (`losses.build_loss` weights by them when asked to)."""
    network.train()
    total, count = 0.0, 0
    for noisy, clean, levels in batches:
        assert clean is not None
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = run_network(network, noisy, levels)
        loss = loss_function(prediction.float(), clean, levels)
        loss.backward()
        if clip_gradients is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip_gradients)
        optimizer.step()
        total += float(loss.detach()) * len(noisy)
        count += len(noisy)
    return total / max(count, 1)


def train_one_epoch_self_supervised(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
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
    batches: Iterator[Batch],
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
    """Train as `config` says; resume from ``last.resume.safetensors`` when `resume` is true.

    `stop_after` ends this run after that many epochs (a time-boxed session); the schedule is
    still the one for `config.epochs`, so a later ``resume=True`` continues exactly.  A new run
    refuses to start when its validation set is contaminated (`meddenoise.splits.start_record`).
    """
    from tqdm import tqdm

    output = config.output
    best_path, last_path = output / "best.safetensors", output / "last.safetensors"
    # Recorded before any work, so every checkpoint names the code the run started from; a
    # contaminated init chain stops the run here (ProvenanceError).
    provenance = None if resume else start_record(config_to_dict(config), config.init)
    group = distributed.start()  # torchrun's processes; alone, rank 0 of 1
    if group.distributed and (config.gan is not None or config.data.mode == "self-supervised"):
        raise ValueError("several processes train supervised configs only (no GAN, no N2N)")
    seed_global_generators(config.seed)  # the one place seeding happens
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
    loss_function = build_loss(config.loss, weighting=config.loss_weighting)
    self_generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch, best_score, stale = 0, -math.inf, 0
    resumed_random_states = None
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
        per_rank = state.get("random_per_rank", [state["random"]])
        if len(per_rank) != group.size:
            raise ValueError(f"the run was saved by {len(per_rank)} processes, not {group.size}")
        resumed_random_states = per_rank[group.rank]
        provenance = resumed_record(read_metadata(last_path), start_epoch)
    assert provenance is not None
    baseline = validation_baselines(data, config.baselines) if group.writer else {}
    for key, value in baseline.items():
        logger.info("validation baseline %s: %.3f", key, value)
    if resumed_random_states is not None:
        # Last, after everything that may draw from them: the next epoch starts from the states
        # the interrupted run would have had.
        restore_global_random_states(resumed_random_states)
    # A config's bf16 runs as bf16 only where the CPU has it natively: emulated, it is slower.
    bf16 = resolve_precision(config.precision) == "bf16"
    log_path = output / "metrics.csv"
    started = time.perf_counter()
    show = (sys.stderr.isatty() if progress is None else progress) and group.writer
    trained = distributed.wrap(network, group)  # DDP across processes; the network alone
    for epoch in tqdm(
        range(start_epoch, config.epochs),
        desc="epochs",
        disable=not show,
        initial=start_epoch,
        total=config.epochs,
    ):
        epoch_start = time.perf_counter()
        batches = distributed.shard(as_tensors(epoch_batches(data, config, epoch)), group)
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
                trained,
                optimizer,
                batches,
                loss_function,
                bf16=bf16,
                clip_gradients=config.clip_gradients,
            )
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        scores = evaluate(network, data) if data.val_noisy and group.writer else {}
        # Without a clean reference the lowest validation (or training) loss wins; every rank
        # takes rank 0's score, so all decide alike (best, early stopping).
        score = distributed.broadcast(
            scores["psnr"] if "psnr" in scores else -scores.get("mse", train_loss), group
        )
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in scores.items()},
            "learning_rate": learning_rate,
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(row)
        # Every rank's random states, for an exact resume (a collective: all ranks call it).
        random_states = distributed.gather(global_random_states(), group)
        if not group.writer:
            best_score, stale = max(best_score, score), 0 if score > best_score else stale + 1
            if _stopping(config, stale, epoch, start_epoch, stop_after):
                break
            continue
        logger.info("%s", ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
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
            **provenance,
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
        # Taken after everything of this epoch that may draw: what the next epoch starts from.
        resume_state["random"], resume_state["random_per_rank"] = random_states[0], random_states
        save_resume_state(resume_path(last_path), resume_state)
        fields = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
        atomic_write_csv(log_path, history, fields)
        if _stopping(config, stale, epoch, start_epoch, stop_after):
            break
    distributed.finish(group)
    return FitResult(best_path, last_path, history, baseline)


def _stopping(
    config: TrainConfig, stale: int, epoch: int, start_epoch: int, stop_after: int | None
) -> bool:
    if stop_after is not None and epoch + 1 - start_epoch >= stop_after:
        return True
    if config.early_stopping is not None and stale >= config.early_stopping:
        logger.info("early stopping after %d epochs without improvement", stale)
        return True
    return False
