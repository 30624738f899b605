"""Training configurations: validated (pydantic), read from YAML, stored inside every checkpoint.

The fields of `ModelConfig.arguments` are the network constructor's keyword arguments, so a
checkpoint alone rebuilds its model.  `meddenoise train --help` prints `describe_fields()`; any
field can be overridden on the command line as ``--set data.patch_size=96``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    name: str = Field(description="network name from meddenoise.models.MODELS, e.g. dncnn")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="constructor keyword arguments, e.g. {channels: 1}"
    )

    @field_validator("name")
    @classmethod
    def known_model(cls, name: str) -> str:
        from meddenoise.models import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        return name


class NoiseConfig(Strict):
    kind: Literal["gaussian", "poisson-gaussian", "low-dose-ct", "mixed"] = Field(
        "gaussian", description="synthetic noise added to clean images (mode: synthetic)"
    )
    sigma_range: tuple[float, float] = Field(
        (0.0, 50.0), description="Gaussian sigma range in 0-255 units, drawn per patch"
    )
    photons_range: tuple[float, float] = Field(
        (100.0, 1000.0), description="photons at full scale (poisson-gaussian), log-uniform"
    )
    read_noise_range: tuple[float, float] = Field(
        (0.005, 0.02), description="read-noise std in [0, 1] units (poisson-gaussian)"
    )
    level_jitter: float = Field(
        0.0,
        ge=0,
        description="relative spread of the noise level given to conditioned networks in "
        "training (e.g. 0.1), so blind use tolerates estimation errors",
    )
    level_map: Literal["scalar", "signal-dependent", "local-flat-windows"] = Field(
        "scalar",
        description="what conditioned networks are told: one noise std per patch (scalar), or "
        "a per-pixel std map read from the smoothed noisy patch (signal-dependent: "
        "Poisson-Gaussian noise varies with intensity; inference fits the map blind), or "
        "(low-dose CT) a per-pixel std from the flattest windows near each pixel of the noisy "
        "slice (local-flat-windows, `estimate.local_noise_std_map`: CT noise is louder at the "
        "body's centre than at its edge), as inference reads it",
    )
    constant_map_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="level_map signal-dependent: the fraction of Poisson-Gaussian patches told "
        "one level, the blind scalar estimate, instead of a map, as inference tells images too "
        "small for the Poisson-Gaussian fit",
    )
    level_source: Literal["true", "estimate"] = Field(
        "true",
        description="the scalar level conditioned networks are told in training: the true std "
        "(true), or the blind estimate inference makes (estimate: `estimate_sigma` on a noisy "
        "window of `estimate_context` pixels around each patch), so the network learns the "
        "estimator's errors, e.g. texture read as noise on nearly clean images",
    )
    estimate_context: int = Field(
        128,
        ge=16,
        description="side of the noisy window the training level is estimated on "
        "(level_source: estimate); the patch is cut from inside it",
    )
    dose_fraction_range: tuple[float, float] = Field(
        (0.1, 0.5), description="dose fraction range (low-dose-ct)"
    )
    pixel_spacing_range: tuple[float, float] = Field(
        (0.3, 0.9),
        description="pixel spacing in mm drawn per slice and epoch (low-dose-ct): sets the "
        "physical size, hence the attenuation and noise, of each training slice",
    )
    own_spacing_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="low-dose-ct: the fraction of draws that use the slice's own pixel spacing "
        "(from its file, where it records one) instead of one from pixel_spacing_range",
    )
    ct_full_dose_photons: float | None = Field(
        None,
        gt=0,
        description="low-dose-ct: None for the calibrated dose (docs/ct-physics.md), or photons "
        "per detector reading at full dose as before issue 14 (the shipped ct-lowdose: 1e5)",
    )
    ct_filters: list[Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"]] = Field(
        default_factory=lambda: ["ramp"],  # type: ignore[arg-type]
        min_length=1,
        description="low-dose-ct: FBP filters, one drawn per slice and epoch",
    )
    ct_views: list[int] = Field(
        default_factory=lambda: [360],
        min_length=1,
        description="low-dose-ct: numbers of views over 180 degrees, one drawn per slice and "
        "epoch; each must divide the largest (the clean sinogram is computed once at it)",
    )
    ct_target: Literal["clean", "noise-free-fbp"] = Field(
        "clean",
        description="low-dose-ct: what the network learns to output: the clean slice, or the "
        "noise-free reconstruction through the same views and filter, so that only noise differs "
        "(as the CT grid scores it)",
    )

    @field_validator(
        "sigma_range",
        "photons_range",
        "read_noise_range",
        "dose_fraction_range",
        "pixel_spacing_range",
    )
    @classmethod
    def ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= bounds[0] <= bounds[1]:
            raise ValueError(f"expected 0 <= low <= high, got {list(bounds)}")
        return bounds

    @field_validator("pixel_spacing_range")
    @classmethod
    def positive_spacing(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] <= 0:
            raise ValueError(f"pixel spacing must be > 0 mm, got {list(bounds)}")
        return bounds

    @field_validator("ct_views")
    @classmethod
    def views_divide_the_largest(cls, views: list[int]) -> list[int]:
        if min(views) < 1 or any(max(views) % count for count in views):
            raise ValueError(f"views must be >= 1 and each divide the largest, got {views}")
        return views


class DataConfig(Strict):
    mode: Literal["paired", "synthetic", "self-supervised"] = Field(
        "synthetic",
        description="paired: ROOT/{train,val}/{low,high}; synthetic: clean images + noise; "
        "self-supervised: noisy images only (Neighbor2Neighbor)",
    )
    root: Path | None = Field(None, description="paired mode: folder holding train/ and val/")
    train: list[str] = Field(
        default_factory=list,
        description="synthetic/self-supervised: files, folders, or packaged images as "
        "pydicom:NAME or skimage:NAME",
    )
    val: list[str] = Field(default_factory=list, description="validation images, as `train`")
    channels: Literal[1, 3] = Field(1, description="1 grey, 3 RGB")
    patch_size: int = Field(64, ge=16, description="training patch side in pixels")
    patches_per_epoch: int = Field(1024, ge=1, description="patches drawn per epoch")
    val_size: int = Field(256, ge=16, description="validation crops: central square of this side")
    val_draws: int = Field(
        1,
        ge=1,
        description="synthetic noise draws per validation crop, each at its own level, so few "
        "validation images still cover the noise range",
    )
    resize: int | None = Field(None, description="resize every image to this square side first")
    window: tuple[float, float] | None = Field(
        None, description="CENTER, WIDTH in modality units (e.g. HU); default: 0.1-99.9 pct"
    )
    augment: bool = Field(True, description="random flips and 90-degree rotations")
    clean_reference: Literal["as-is", "bm3d"] = Field(
        "as-is",
        description="synthetic mode: use each training and validation image as it is, or (bm3d) "
        "denoised once at its blind-estimated noise level first, so the noise it carries is not "
        "taken for signal (meddenoise.data.clean_reference; needs the bm3d extra)",
    )
    scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="each image is also used downscaled by these factors, e.g. [1, 0.5, 0.25]",
    )

    @field_validator("scales")
    @classmethod
    def scales_in_range(cls, scales: list[float]) -> list[float]:
        if not scales or not all(0 < scale <= 1 for scale in scales):
            raise ValueError("scales must be factors in (0, 1]")
        return scales

    @model_validator(mode="after")
    def sources_given(self) -> DataConfig:
        if self.mode == "paired" and self.root is None:
            raise ValueError("paired mode needs data.root (a folder with train/ and val/)")
        if self.mode != "paired" and not self.train:
            raise ValueError(f"{self.mode} mode needs data.train (images)")
        return self

    @model_validator(mode="after")
    def test_split_untouched(self) -> DataConfig:
        # The benchmark's numbers mean something only while no run trains, tunes or selects on
        # its images: refused here, at the one door every config comes through.
        from meddenoise.splits import members_of_test_split

        roles = [("train", self.train), ("val", self.val)]
        if self.mode == "paired" and self.root is not None:
            roles = [(role, [str(self.root / role)]) for role in ("train", "val")]
        for role, entries in roles:
            for entry in entries:
                members = members_of_test_split(entry)
                if members:
                    raise ValueError(
                        f"data.{role} entry {entry!r} is in the test split "
                        f"({', '.join(members)}; meddenoise.splits.TEST_SPLIT): the benchmark "
                        "reports on it, so no run may train, tune or select on it"
                    )
        return self


class GanConfig(Strict):
    adversarial_weight: float = Field(1.0, ge=0, description="weight of the adversarial loss")
    reconstruction_weight: float = Field(100.0, ge=0, description="weight of the L1 loss")
    discriminator_learning_rate: float = Field(2e-4, gt=0, description="discriminator Adam lr")
    figure_every: int = Field(1, ge=1, description="save noisy|denoised|clean every N epochs")


class TrainConfig(Strict):
    model: ModelConfig
    data: DataConfig
    noise: NoiseConfig = Field(default_factory=NoiseConfig)  # type: ignore[arg-type]
    loss: str = Field("l1", description="l1, mse, ssim, or a mixture like 0.8*l1+0.2*ssim")
    loss_weighting: Literal["none", "noise-level"] = Field(
        "none",
        description="noise-level: each patch's prediction and target are divided by its noise "
        "level (relative to 25/255, the level floored at 5/255) before the loss, so errors count "
        "in units of the patch's own noise and quiet patches are not outweighed by loud ones "
        "(issue 13: the low-noise end); for l1 and mse losses",
    )
    epochs: int = Field(10, ge=1, description="number of epochs")
    batch_size: int = Field(16, ge=1, description="patches per optimizer step")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    clip_gradients: float | None = Field(
        None, gt=0, description="clip the gradient norm to this (guards against divergence)"
    )
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="learning-rate schedule over the epochs"
    )
    early_stopping: int | None = Field(
        None, description="stop after this many epochs without a better validation PSNR"
    )
    gan: GanConfig | None = Field(None, description="adversarial training (unet_gan)")
    init: str | None = Field(
        None,
        description="start from these weights (fine-tuning): a .safetensors checkpoint of the "
        "same model, or a shipped name: default, ct-lowdose, rgb (a grey cond_unet may start a "
        "colour one: its first and last layers are widened)",
    )
    baselines: list[str] = Field(
        default_factory=list,
        description="classical methods scored on the validation set for comparison, e.g. [median]",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16 autocast for the forward pass (about 2x faster on AVX-512 CPUs)"
    )
    seed: int = Field(0, description="seed for weights, patches and noise")
    output: Path = Field(Path("runs/model"), description="folder for checkpoints and logs")
    description: str = Field("", description="what this recipe reproduces or stands in for")

    @field_validator("loss")
    @classmethod
    def parse_loss(cls, loss: str) -> str:
        from meddenoise.losses import parse_loss_terms

        parse_loss_terms(loss)
        return loss

    @model_validator(mode="after")
    def level_maps_where_made(self) -> TrainConfig:
        # Maps are made only for synthetic grey Poisson-Gaussian noise, and inference builds
        # them only for grey images: anywhere else the checkpoint would get maps it never saw.
        if self.noise.level_map == "signal-dependent":
            if self.data.mode != "synthetic" or self.noise.kind not in (
                "poisson-gaussian",
                "mixed",
            ):
                raise ValueError(
                    "noise.level_map signal-dependent needs data.mode synthetic and noise.kind "
                    "poisson-gaussian or mixed"
                )
            if self.data.channels != 1:
                raise ValueError("noise.level_map signal-dependent is for grey (channels 1) data")
        if self.noise.level_map == "local-flat-windows" and (
            self.noise.kind != "low-dose-ct" or self.data.channels != 1
        ):
            raise ValueError("noise.level_map local-flat-windows is made for grey low-dose CT")
        if self.noise.level_source == "estimate":
            # Low-dose CT levels are always the slice's blind estimate; maps have their own fit.
            if (
                self.data.mode != "synthetic"
                or self.noise.kind == "low-dose-ct"
                or self.noise.level_map != "scalar"
            ):
                raise ValueError(
                    "noise.level_source estimate needs data.mode synthetic, noise.kind gaussian, "
                    "poisson-gaussian or mixed, and noise.level_map scalar"
                )
            if self.noise.estimate_context < self.data.patch_size:
                raise ValueError(
                    f"noise.estimate_context {self.noise.estimate_context} is smaller than "
                    f"data.patch_size {self.data.patch_size}"
                )
        if self.loss_weighting == "noise-level":
            from meddenoise.losses import parse_loss_terms

            # Scaling prediction and target weights L1 and MSE exactly; SSIM's constants would
            # change meaning, and the GAN and self-supervised epochs have no such loss.
            names = {name for _, name in parse_loss_terms(self.loss)}
            if not names <= {"l1", "mse"} or self.gan is not None:
                raise ValueError("loss_weighting noise-level is for l1 and mse losses, no gan")
            if self.data.mode == "self-supervised":
                raise ValueError("loss_weighting noise-level needs clean targets")
        return self


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read a YAML file (or a dict), apply ``key.sub=value`` overrides, validate.

    Override values are parsed as YAML, so ``epochs=2``, ``data.window=[40,400]`` and
    ``data.root=/data/x`` all work.  Errors name the field.
    """
    if isinstance(source, dict):
        tree = dict(source)
    else:
        path = Path(source)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read config: {error}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a config is a mapping of fields")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: expected key=value")
        key, raw = override.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return validated(TrainConfig, tree, "config")


def validated(model: type[Model], tree: dict[str, Any], what: str) -> Model:
    """`tree` validated as `model`; a ConfigError naming every invalid field otherwise."""
    try:
        return model.model_validate(tree)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "config"
            problems.append(f"{where}: {item['msg']}")
        raise ConfigError(f"invalid {what}: " + "; ".join(problems)) from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-safe dict of the config (paths as strings)."""
    return config.model_dump(mode="json")


def describe_fields(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """One line per config field, dotted, with its meaning and default, for --help."""
    lines = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = next(
            (
                candidate
                for candidate in getattr(annotation, "__args__", (annotation,))
                if isinstance(candidate, type) and issubclass(candidate, BaseModel)
            ),
            None,
        )
        if nested is not None:
            lines.extend(describe_fields(nested, f"{prefix}{name}."))
            continue
        default = (
            ""
            if info.is_required()
            else f" (default: {info.get_default(call_default_factory=True)})"
        )
        lines.append(f"{prefix}{name}: {info.description or ''}{default}")
    return lines
