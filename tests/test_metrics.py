"""Metrics agree with skimage.metrics, reject bad input loudly, and never return NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from meddenoise.metrics import mse, psnr, residual, ssim, summary

SHAPES = {
    "grey": ((64, 48), None),
    "colour": ((40, 36, 3), -1),
    "volume": ((9, 32, 30), None),
}


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.random(shape)
    test = reference + rng.normal(0.0, 0.1, shape)
    return reference, test


@pytest.mark.parametrize("layout", list(SHAPES))
@pytest.mark.parametrize("data_range", [1.0, 4095.0])
def test_metrics_agree_with_skimage(layout: str, data_range: float) -> None:
    shape, channel_axis = SHAPES[layout]
    reference, test = _pair(shape)
    reference, test = reference * data_range, test * data_range
    assert mse(reference, test) == pytest.approx(mean_squared_error(reference, test), rel=1e-6)
    assert psnr(reference, test, data_range=data_range) == pytest.approx(
        peak_signal_noise_ratio(reference, test, data_range=data_range), abs=1e-6
    )
    assert ssim(reference, test, data_range=data_range) == pytest.approx(
        structural_similarity(reference, test, data_range=data_range, channel_axis=channel_axis),
        abs=1e-6,
    )


def test_float32_inputs_are_computed_in_float64() -> None:
    reference, test = _pair((64, 64))
    expected = peak_signal_noise_ratio(reference, test, data_range=1.0)
    # float32 rounding of the inputs moves PSNR by far less than 1e-4 dB; float32 arithmetic on the
    # squared error would not be guaranteed to.
    value = psnr(reference.astype(np.float32), test.astype(np.float32), data_range=1.0)
    assert value == pytest.approx(expected, abs=1e-4)


def test_identical_images_give_infinite_psnr_and_unit_ssim() -> None:
    image = np.random.default_rng(1).random((32, 32))
    assert psnr(image, image, data_range=1.0) == math.inf
    assert ssim(image, image, data_range=1.0) == pytest.approx(1.0)
    assert mse(image, image) == 0.0


def test_summary_holds_all_three() -> None:
    reference, test = _pair((32, 32))
    result = summary(reference, test, data_range=1.0)
    assert set(result) == {"psnr", "ssim", "mse"}
    assert result["psnr"] == pytest.approx(psnr(reference, test, data_range=1.0))


def test_residual_is_float32_noisy_minus_denoised() -> None:
    noisy, denoised = _pair((16, 20))
    result = residual(noisy, denoised)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, (noisy - denoised).astype(np.float32))


@pytest.mark.parametrize("function", [psnr, ssim])
@pytest.mark.parametrize("data_range", [0.0, -1.0, math.nan, math.inf])
def test_bad_data_range_raises(function, data_range: float) -> None:
    reference, test = _pair((16, 16))
    with pytest.raises(ValueError, match="data_range"):
        function(reference, test, data_range=data_range)


def test_data_range_is_required() -> None:
    reference, test = _pair((16, 16))
    with pytest.raises(TypeError):
        psnr(reference, test)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ssim(reference, test)  # type: ignore[call-arg]


@pytest.mark.parametrize("function", [mse, psnr, ssim, summary, residual])
def test_shape_mismatch_raises(function) -> None:
    kwargs = {"data_range": 1.0} if function in (psnr, ssim, summary) else {}
    with pytest.raises(ValueError, match="shape"):
        function(np.zeros((16, 16)), np.zeros((16, 17)), **kwargs)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("function", [mse, psnr, ssim, residual])
def test_non_finite_inputs_raise(function, bad_value: float) -> None:
    kwargs = {"data_range": 1.0} if function in (psnr, ssim) else {}
    reference, test = _pair((16, 16))
    test[3, 4] = bad_value
    with pytest.raises(ValueError, match="NaN or Inf"):
        function(reference, test, **kwargs)
    with pytest.raises(ValueError, match="NaN or Inf"):
        function(test, reference, **kwargs)


def test_ssim_too_small_raises_clearly() -> None:
    with pytest.raises(ValueError, match="7"):
        ssim(np.zeros((5, 30)), np.zeros((5, 30)), data_range=1.0)


# --- masks: only the pixels that hold the image are scored ---


def test_masked_metrics_score_only_the_masked_pixels() -> None:
    reference, test = _pair((40, 48))
    mask = np.zeros(reference.shape, bool)
    mask[5:30, 10:40] = True

    expected_mse = float(np.mean((reference[mask] - test[mask]) ** 2))
    _, local = structural_similarity(reference, test, data_range=1.0, full=True)
    interior = np.zeros(reference.shape, bool)
    interior[3:-3, 3:-3] = True

    assert mse(reference, test, mask=mask) == pytest.approx(expected_mse, rel=1e-12)
    assert psnr(reference, test, data_range=1.0, mask=mask) == pytest.approx(
        10 * np.log10(1.0 / expected_mse), abs=1e-9
    )
    assert ssim(reference, test, data_range=1.0, mask=mask) == pytest.approx(
        float(local[mask & interior].mean()), abs=1e-12
    )


@pytest.mark.parametrize("layout", list(SHAPES))
def test_a_mask_of_every_pixel_gives_the_unmasked_scores(layout: str) -> None:
    shape, _ = SHAPES[layout]
    reference, test = _pair(shape)
    everything = np.ones(shape if layout != "colour" else shape[:-1], bool)

    assert summary(reference, test, data_range=1.0, mask=everything) == pytest.approx(
        summary(reference, test, data_range=1.0)
    )


def test_compare_takes_the_data_range_inside_the_mask() -> None:
    from meddenoise.metrics import compare

    reference, test = _pair((32, 32))
    reference[:4], test[:4] = -3024.0, -3024.0  # padding far below the image's values
    mask = np.ones(reference.shape, bool)
    mask[:4] = False

    scores = compare(reference, test, layout="grey", mask=mask)

    assert scores["data_range"] == pytest.approx(reference[4:].max() - reference[4:].min())
    assert (scores["scored"], scores["pixels"]) == (28 * 32, 32 * 32)


@pytest.mark.parametrize(
    ("mask", "message"),
    [(np.zeros((16, 16), bool), "selects no pixel"), (np.ones((8, 8), bool), "does not match")],
)
def test_bad_masks_raise(mask: np.ndarray, message: str) -> None:
    reference, test = _pair((16, 16))

    with pytest.raises(ValueError, match=message):
        mse(reference, test, mask=mask)
