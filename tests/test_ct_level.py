"""The CT noise level by physics (`estimate.ct_noise_std_map`, the ``ct-physics`` rule of
`NeuralDenoiser` and of CT adaptation): the shape from the slice's attenuation, the scale from
its flattest places."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise.estimate import (
    ct_attenuation_units,
    ct_noise_std_map,
    flat_window_noise_std,
)

from .test_adapt_synthetic import EchoLevel


def body_slice(side: int = 128) -> np.ndarray:
    """An elliptical water body (0.5 in LowDoseCT's units) with fat and bone inserts, in air."""
    rows, columns = np.mgrid[:side, :side] - (side - 1) / 2
    body = np.where(np.hypot(rows, columns * 1.3) <= 0.44 * side, 0.5, 0.0)
    body[np.hypot(rows - 0.15 * side, columns) <= 0.08 * side] = 0.45  # fat, -100 HU
    body[np.hypot(rows + 0.18 * side, columns - 0.1 * side) <= 0.05 * side] = 1.0  # bone
    return body.astype(np.float32)


def smooth_body_slice(side: int = 128) -> np.ndarray:
    """`body_slice` with edges a pixel or two wide, as a scanner's resolution makes them: sharp
    edges ring through filtered back-projection, and the ripple reads as noise."""
    from scipy import ndimage

    return ndimage.gaussian_filter(body_slice(side), 1.5).astype(np.float32)


VIEWS = 360
DOSE = 0.1


def simulated(body: np.ndarray, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """One noisy LowDoseCT reconstruction of `body` (2.5 mm pixels) and the noise's true
    variance at each pixel, from `draws` further draws."""
    from scipy import ndimage

    from meddenoise.noise import LowDoseCT

    model = LowDoseCT(dose_fraction=DOSE, pixel_spacing_mm=2.5, views=VIEWS, electronic_noise=0.0)
    sinogram = model.sinogram(body)
    reference = model.noise_free_from_sinogram(sinogram, body.shape)
    rng = np.random.default_rng(0)
    noisy = model.noisy_from_sinogram(sinogram, body.shape, rng)
    noise = [model.noisy_from_sinogram(sinogram, body.shape, rng) - reference for _ in range(draws)]
    return noisy, ndimage.uniform_filter(np.mean(np.square(noise), axis=0), 9)


def test_ct_units_are_read_off_the_histogram_whatever_the_mapping() -> None:
    rng = np.random.default_rng(1)
    body = body_slice() + rng.normal(0.0, 0.004, (128, 128)).astype(np.float32)
    # As a DICOM file's own value range maps it: HU, then its minimum to 0 and maximum to 1;
    # a corner of padding sits at the range's floor and is left out.
    hounsfield = body * 2000.0 - 1000.0
    hounsfield[:6, :6] = -3024.0
    mapped = (hounsfield - hounsfield.min()) / (hounsfield.max() - hounsfield.min())
    units = ct_attenuation_units(mapped)
    assert abs(float(np.median(units[body_slice() == 0.0][6:])) - 0.0) < 0.02  # air
    assert abs(float(np.median(units[body_slice() == 0.5])) - 0.5) < 0.02  # water
    assert abs(float(np.median(units[body_slice() == 1.0])) - 1.0) < 0.05  # bone
    with pytest.raises(ValueError, match="constant"):
        ct_attenuation_units(np.full((64, 64), 0.3))
    with pytest.raises(ValueError, match="no soft tissue"):
        ct_attenuation_units(np.where(np.arange(64)[None, :] < 60, 0.0, 0.1) * np.ones((64, 1)))


def test_the_ct_map_follows_the_simulated_noise_across_the_body() -> None:
    from scipy import ndimage

    body = smooth_body_slice()
    noisy, variance = simulated(body, draws=16)
    told = ct_noise_std_map(noisy, 2.5)
    assert told.shape == noisy.shape and told.dtype == np.float32 and np.all(told > 0)
    inside = ndimage.binary_erosion(body > 0.3, iterations=10)
    ratio = told / np.sqrt(variance)
    # The level: within 35 % of the truth in the body (the scale's quantile sits low on
    # purpose: telling a network too much smooths anatomy away).
    assert 0.65 < float(np.median(ratio[inside])) < 1.35
    # The shape: the centre against the air around the body, as the truth has it.
    air = body < 0.1
    air[:10], air[-10:], air[:, :10], air[:, -10:] = False, False, False, False
    told_contrast = told[64, 64] / float(np.median(told[air]))
    true_contrast = np.sqrt(variance[64, 64] / float(np.median(variance[air])))
    assert true_contrast > 1.3 and abs(told_contrast / true_contrast - 1) < 0.2
    # The same slice in another linear map of its values: the same map in those units.
    assert np.allclose(ct_noise_std_map(3.0 * noisy + 0.2, 2.5), 3.0 * told, rtol=0.02)
    with pytest.raises(ValueError, match="pixel spacing"):
        ct_noise_std_map(noisy, 0.0)
    # A blank plane has no air and soft tissue to read: it is told the local map (no noise).
    assert np.array_equal(ct_noise_std_map(np.full((64, 64), 0.25), 2.5), np.zeros((64, 64)))


def test_a_ct_physics_network_is_told_the_map_at_its_pixel_spacing() -> None:
    from meddenoise.inference import NeuralDenoiser

    noisy, _ = simulated(smooth_body_slice(), draws=1)
    noisy = noisy.astype(np.float32)
    denoiser = NeuralDenoiser(
        EchoLevel(), level_map="ct-physics", precision="fp32", device="cpu", pixel_spacing_mm=2.5
    )
    assert np.allclose(denoiser(noisy), ct_noise_std_map(noisy, 2.5), atol=1e-7)
    assert denoiser.noise_level(noisy) == flat_window_noise_std(noisy)  # colour: one level


def test_an_adapted_ct_checkpoint_records_its_pixel_spacing(tmp_path) -> None:
    from meddenoise.checkpoint import load_checkpoint, save_checkpoint
    from meddenoise.methods import load_network
    from meddenoise.models import CondUNet

    arguments = {"channels": 1, "widths": [8, 16], "blocks": [1, 1]}
    network = CondUNet(channels=1, widths=(8, 16), blocks=(1, 1))
    path = tmp_path / "ct.safetensors"
    noise = {"level_map": "ct-physics", "pixel_spacing_mm": 0.8}
    save_checkpoint(path, network, model="cond_unet", arguments=arguments,
                    extra={"config": {"noise": noise}})  # fmt: skip
    checkpoint = load_checkpoint(path)
    assert checkpoint.level_map == "ct-physics" and checkpoint.pixel_spacing_mm == 0.8
    denoiser = load_network(path, precision="fp32")
    assert denoiser.level_map == "ct-physics" and denoiser.pixel_spacing_mm == 0.8
    # An export's sidecar says what the rule needs.
    from meddenoise.export import load_source

    metadata = load_source(path).metadata("onnx")
    assert metadata["level_map"] == "ct-physics" and metadata["pixel_spacing_mm"] == 0.8
    for bad in (-1.0, "0.8", float("nan")):
        extra = {"config": {"noise": {**noise, "pixel_spacing_mm": bad}}}
        save_checkpoint(path, network, model="cond_unet", arguments=arguments, extra=extra)
        assert load_checkpoint(path).pixel_spacing_mm is None
