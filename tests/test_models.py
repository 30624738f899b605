"""The network table: every model in MODELS is tested here without model-specific code.

Tests build small variants (SMALL_KWARGS) so the file runs in seconds; each model's default
constructor is also built and run once.  A model missing from SMALL_KWARGS is tested at its
defaults.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch import nn

from meddenoise.models import MODELS, CondUNet, PatchDiscriminator, build_model
from meddenoise.models.common import crop_to, pad_to_multiple

SMALL_KWARGS: dict[str, dict[str, Any]] = {
    "encoder_decoder": {"widths": (8, 16, 16)},
    "resnet18_unet": {
        "encoder_widths": (8, 16, 16, 16),
        "blocks": (1, 1, 1, 1),
        "decoder_widths": (16, 16, 8, 8, 8),
        "full_resolution_width": 8,
    },
    "gondara_cdae": {"features": 8},
    "unet_gan": {"base_width": 8, "depth": 4},
    "dncnn": {"depth": 5, "features": 16},
    "red_cnn": {"features": 16},
    "cond_unet": {"widths": (8, 16), "blocks": (1, 1)},
    "pd_cond_unet": {"widths": (8, 16), "blocks": (1, 1)},
}

# Adam's first step moves every weight by about the learning rate; RED-CNN (no normalisation,
# 5 x 5 x 96 fan-in) overshoots at 1e-3 and is trained at 1e-5 by its reference port SSinyu/RED-CNN.
LEARNING_RATES: dict[str, float] = {"red_cnn": 1e-5}

NAMES = list(MODELS)


def small_model(name: str, channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name](channels=channels, **SMALL_KWARGS.get(name, {}))


def run(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Call `model` as inference code will: with a noise map only when it is conditioned."""
    if model.conditioned:
        return model(image, torch.full_like(image[:, :1], 0.1))
    return model(image)


def image_batch(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, channels, height, width, generator=generator)


def test_model_names_are_the_documented_ones() -> None:
    assert set(MODELS) == {
        "encoder_decoder",
        "resnet18_unet",
        "gondara_cdae",
        "unet_gan",
        "dncnn",
        "red_cnn",
        "cond_unet",
        "pd_cond_unet",
    }


@pytest.mark.parametrize("name", NAMES)
def test_constructor_arguments_are_keyword_only_and_typed(name: str) -> None:
    parameters = list(inspect.signature(MODELS[name]).parameters.values())
    assert parameters, name
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter.name
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
    assert "channels" in {parameter.name for parameter in parameters}


@pytest.mark.parametrize("name", NAMES)
def test_conditioned_is_a_class_attribute(name: str) -> None:
    cls: Any = MODELS[name]
    assert isinstance(cls.conditioned, bool)
    assert cls.conditioned == (name in ("cond_unet", "pd_cond_unet"))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(67, 93), (17, 23)])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_equals_input_shape(name: str, size: tuple[int, int], channels: int) -> None:
    model = small_model(name, channels).eval()
    image = image_batch(2, channels, *size)
    with torch.no_grad():
        output = run(model, image)
    assert output.shape == image.shape
    assert output.dtype == torch.float32
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("name", NAMES)
def test_one_optimizer_step_lowers_the_loss(name: str) -> None:
    model = small_model(name).train()
    clean = image_batch(2, 1, 33, 45)
    noise_generator = torch.Generator().manual_seed(2)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=noise_generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATES.get(name, 1e-3))

    def loss_value() -> torch.Tensor:
        torch.manual_seed(3)  # the same dropout masks before and after the step
        return nn.functional.mse_loss(run(model, noisy), clean)

    loss = loss_value()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert loss_value().item() < loss.item()


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name: str) -> None:
    model = small_model(name).eval()
    image = image_batch(1, 1, 40, 36)
    with torch.no_grad():
        assert torch.equal(run(model, image), run(model, image))


@pytest.mark.parametrize("name", NAMES)
def test_default_model_builds_and_runs(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    assert isinstance(model.size_multiple, int)
    image = image_batch(1, 1, 64, 64)
    with torch.no_grad():
        output = run(model, image)
    assert output.shape == image.shape
    assert torch.isfinite(output).all()


def test_cond_unet_needs_a_noise_map() -> None:
    model = small_model("cond_unet").eval()
    image = image_batch(1, 1, 32, 32)
    with pytest.raises(TypeError):
        model(image)
    with pytest.raises(ValueError, match="noise_map"):
        model(image, torch.full((1, 1, 16, 16), 0.1))


@pytest.mark.parametrize("channels", [1, 3])
def test_cond_unet_noise_map_shapes_agree(channels: int) -> None:
    model = small_model("cond_unet", channels).eval()
    image = image_batch(2, channels, 30, 26)
    with torch.no_grad():
        per_image = model(image, torch.full((2, 1, 1, 1), 0.1))
        per_pixel = model(image, torch.full((2, 1, 30, 26), 0.1))
        per_channel = model(image, torch.full((2, channels, 30, 26), 0.1))
    torch.testing.assert_close(per_image, per_pixel)
    torch.testing.assert_close(per_image, per_channel)


def test_cond_unet_is_homogeneous() -> None:
    """Bias-free: scaling the image and its noise level scales the output by the same factor."""
    model = small_model("cond_unet").eval()
    image = image_batch(1, 1, 37, 29)
    sigma = torch.full((1, 1, 1, 1), 0.1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(3 * image, 3 * sigma), 3 * model(image, sigma), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("unshuffle", [1, 4])
def test_cond_unet_folds_the_input_by_its_unshuffle_factor(unshuffle: int) -> None:
    """Any fold keeps any image size, stays bias-free, and pads to fold x 2 ** (levels - 1)."""
    model = CondUNet(widths=(8, 16), blocks=(1, 1), unshuffle=unshuffle).eval()
    assert model.size_multiple == unshuffle * 2
    assert model.head.in_channels == 2 * unshuffle**2
    image = image_batch(1, 1, 37, 29)
    sigma = torch.full((1, 1, 1, 1), 0.1)
    with torch.no_grad():
        output = model(image, sigma)
        assert output.shape == image.shape
        torch.testing.assert_close(model(3 * image, 3 * sigma), 3 * output, rtol=1e-4, atol=1e-5)


def test_cond_unet_follows_the_noise_level() -> None:
    model = CondUNet(widths=(8, 16), blocks=(1, 1)).eval()
    image = image_batch(1, 1, 32, 32)
    with torch.no_grad():
        low = model(image, torch.full((1, 1, 1, 1), 0.01))
        high = model(image, torch.full((1, 1, 1, 1), 0.2))
    assert not torch.allclose(low, high)


@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_gives_a_patch_map(channels: int) -> None:
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(channels=channels, base_width=8)
    noisy, clean = image_batch(2, channels, 64, 64), image_batch(2, channels, 64, 64)
    logits = discriminator(noisy, clean)
    assert logits.shape == (2, 1, 6, 6)  # 64 / 8 - 2: the 70 x 70 PatchGAN
    assert torch.isfinite(logits).all()


def test_discriminator_rejects_bad_inputs() -> None:
    discriminator = PatchDiscriminator(base_width=8)
    with pytest.raises(ValueError, match="one shape"):
        discriminator(image_batch(1, 1, 64, 64), image_batch(1, 1, 64, 32))
    with pytest.raises(ValueError, match="24"):
        discriminator(image_batch(1, 1, 16, 16), image_batch(1, 1, 16, 16))


def test_build_model_builds_with_arguments_from_a_config() -> None:
    model = build_model("cond_unet", channels=3, widths=[8, 16], blocks=[1, 1])
    assert isinstance(model, CondUNet)
    assert model.size_multiple == 4


def test_build_model_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'resnet50'.*dncnn.*cond_unet"):
        build_model("resnet50")


def test_build_model_names_a_bad_argument() -> None:
    with pytest.raises(ValueError, match=r"'width'.*features"):
        build_model("dncnn", width=32)
    with pytest.raises(ValueError, match="widths"):
        build_model("encoder_decoder", widths="wide")
    with pytest.raises(ValueError, match="depth"):
        build_model("dncnn", depth=0)
    with pytest.raises(ValueError, match="blocks"):
        build_model("cond_unet", widths=(8, 16), blocks=(1,))


def test_pad_to_multiple_reflects_and_crop_undoes_it() -> None:
    image = torch.arange(5.0).reshape(1, 1, 1, 5).expand(1, 1, 3, 5)
    padded = pad_to_multiple(image, 4)
    assert padded.shape == (1, 1, 4, 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    assert torch.equal(crop_to(padded, 3, 5), image)
    assert pad_to_multiple(image, 1) is image


def test_pad_to_multiple_replicates_when_the_image_is_too_small() -> None:
    image = torch.tensor([[[[1.0, 2.0]]]])
    padded = pad_to_multiple(image, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert padded[0, 0, :, -1].tolist() == [2.0] * 8
    assert pad_to_multiple(image, 1, min_size=5).shape == (1, 1, 5, 5)


def test_widened_grey_weights_give_the_grey_output_on_grey_colour_input() -> None:
    # A colour image whose three channels are equal is a grey image: the widened network must
    # denoise it exactly as the grey one does, in every channel.
    from meddenoise.models.cond_unet import widen_grey_weights

    torch.manual_seed(0)
    grey = build_model("cond_unet", widths=(8, 16), blocks=(1, 1)).eval()
    colour = build_model("cond_unet", channels=3, widths=(8, 16), blocks=(1, 1)).eval()
    colour.load_state_dict(widen_grey_weights(grey.state_dict(), 3))
    image = torch.rand(1, 1, 24, 24)
    level = torch.full((1, 1, 1, 1), 0.1)
    with torch.no_grad():
        expected = grey(image, level)
        widened = colour(image.expand(1, 3, 24, 24), level)
    for channel in range(3):
        torch.testing.assert_close(widened[:, channel : channel + 1], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="1-channel"):
        widen_grey_weights(colour.state_dict(), 3)
