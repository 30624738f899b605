"""IntensityMapping: modality units <-> [0, 1], exactly invertible, with clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meddenoise.intensity import IntensityMapping, percentile_range

DTYPES = [np.uint8, np.uint16, np.int16, np.float32, np.float64]


def sample(dtype: type, shape: tuple[int, ...] = (32, 48)) -> np.ndarray:
    """Values across the dtype's range (its extremes included), or a CT-like float range."""
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        array.flat[0], array.flat[1] = info.min, info.max
        return array
    return (rng.normal(size=shape) * 800.0 - 200.0).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_array_uses_the_images_own_range(dtype: type) -> None:
    array = sample(dtype)

    mapping = IntensityMapping.from_array(array)

    assert mapping.low == float(array.min())
    assert mapping.high == float(array.max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_unit_spans_zero_to_one_as_float32(dtype: type) -> None:
    array = sample(dtype)
    mapping = IntensityMapping.from_array(array)

    unit = mapping.to_unit(array)

    assert unit.dtype == np.float32
    assert unit.shape == array.shape
    assert unit.min() == 0.0
    assert unit.max() == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_unit_inverts_to_unit(dtype: type) -> None:
    array = sample(dtype)
    mapping = IntensityMapping.from_array(array)

    back = mapping.from_unit(mapping.to_unit(array))

    assert back.dtype == np.float64
    # float32 in [0, 1] keeps ~7 significant digits of the range.
    np.testing.assert_allclose(back, array.astype(np.float64), rtol=0, atol=mapping.scale * 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_change_with_no_change_returns_the_original_bit_exactly(dtype: type) -> None:
    array = sample(dtype)
    mapping = IntensityMapping.from_array(array)
    unit = mapping.to_unit(array)

    result = mapping.apply_change(array, unit, unit.copy())

    assert np.array_equal(result.astype(dtype), array)
    assert np.array_equal(result, array.astype(np.float64))


def test_apply_change_carries_the_change_in_modality_units() -> None:
    array = np.array([[0.0, 1000.0]])
    mapping = IntensityMapping(0.0, 1000.0)
    unit = mapping.to_unit(array)

    result = mapping.apply_change(array, unit, unit + np.float32(0.25))

    np.testing.assert_allclose(result, [[250.0, 1250.0]])


def test_from_window_maps_the_window_edges_to_zero_and_one() -> None:
    mapping = IntensityMapping.from_window(40.0, 400.0)

    assert (mapping.low, mapping.high) == (-160.0, 240.0)
    np.testing.assert_allclose(mapping.to_unit(np.array([-160.0, 40.0, 240.0])), [0.0, 0.5, 1.0])


def test_window_keeps_values_outside_it_instead_of_clipping() -> None:
    mapping = IntensityMapping.from_window(40.0, 400.0)
    values = np.array([-1000.0, 3000.0])

    unit = mapping.to_unit(values)

    assert unit[0] < 0.0 and unit[1] > 1.0
    np.testing.assert_allclose(mapping.from_unit(unit), values, rtol=1e-6)


@pytest.mark.parametrize("width", [0.0, -10.0, math.nan])
def test_from_window_refuses_a_width_that_is_not_positive(width: float) -> None:
    with pytest.raises(ValueError, match="width"):
        IntensityMapping.from_window(40.0, width)


@pytest.mark.parametrize(("low", "high"), [(5.0, 5.0), (10.0, 0.0)])
def test_empty_range_is_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="empty"):
        IntensityMapping(low, high)


@pytest.mark.parametrize(
    ("low", "high"), [(math.nan, 1.0), (0.0, math.inf), (-math.inf, 0.0), (0.0, math.nan)]
)
def test_non_finite_range_is_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        IntensityMapping(low, high)


def test_range_too_wide_for_float64_is_refused() -> None:
    with pytest.raises(ValueError, match="wide"):
        IntensityMapping(-1e308, 1e308)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_from_array_refuses_non_finite_values(bad: float) -> None:
    array = np.zeros((4, 4))
    array[1, 2] = bad

    with pytest.raises(ValueError, match="NaN or infinite"):
        IntensityMapping.from_array(array)


@pytest.mark.parametrize("value", [0.0, -1024.0, 7.0, 2.1e38])
def test_constant_image_gets_an_invertible_range(value: float) -> None:
    array = np.full((8, 8), value)

    mapping = IntensityMapping.from_array(array)
    unit = mapping.to_unit(array)

    assert mapping.low == value
    assert mapping.high > mapping.low
    assert np.all(unit == 0.0)
    assert np.array_equal(mapping.apply_change(array, unit, unit), array)


def test_from_array_with_a_mask_ignores_masked_out_pixels() -> None:
    array = np.array([[-2000.0, 0.0], [100.0, 50.0]])
    mask = array > -2000.0

    mapping = IntensityMapping.from_array(array, mask=mask)

    assert (mapping.low, mapping.high) == (0.0, 100.0)


def test_from_array_with_an_empty_selection_falls_back_to_unit_range() -> None:
    array = np.ones((3, 3))

    mapping = IntensityMapping.from_array(array, mask=np.zeros((3, 3), bool))

    assert (mapping.low, mapping.high) == (0.0, 1.0)


def test_percentile_range_ignores_outliers() -> None:
    values = np.concatenate([np.linspace(0.0, 100.0, 10_000), [1e6]])

    mapping = percentile_range(values)

    assert mapping.high < 1000.0
    assert mapping.low >= 0.0


def test_percentile_range_of_a_constant_image_is_invertible() -> None:
    mapping = percentile_range(np.full(10, 3.0))

    assert mapping.high > mapping.low
