"""Training data entries that name files inside installed packages (`meddenoise.data`)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from meddenoise.config import DataConfig
from meddenoise.data import DataError, load_images, packaged_image
from meddenoise.splits import in_test_split

T1_SLICE = "dipy:data/files/t1_coronal_slice.npy"
B0_SLICES = "dipy:data/files/S0_10slices.nii.gz"


def test_dipy_t1_slice_is_read_as_its_array_without_unpickling():
    slice_ = packaged_image(T1_SLICE)
    assert isinstance(slice_, np.ndarray)
    assert slice_.shape == (256, 256) and slice_.dtype == np.float64
    assert float(slice_.min()) == 0.0 and float(slice_.max()) == 1.0
    assert not in_test_split(T1_SLICE)


def test_dipy_b0_volume_gives_each_slice_as_a_training_plane():
    data = DataConfig(train=[B0_SLICES], val=["pydicom:CT_small.dcm"], patch_size=64, scales=[1.0])
    planes = load_images([B0_SLICES], data)
    assert len(planes) == 10
    assert all(plane.shape == (128, 128, 1) for plane in planes)
    assert all(plane.min() == 0.0 and plane.max() == 1.0 for plane in planes)
    assert not in_test_split(B0_SLICES)


def test_a_packaged_npy_that_needs_unpickling_is_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "objects.npy", np.array([{"patient": "x"}], dtype=object))
    np.save(tmp_path / "line.npy", np.arange(5.0))
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        if name == "dipy":
            return SimpleNamespace(submodule_search_locations=[str(tmp_path)])
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(DataError, match="not a plain numeric array"):
        packaged_image("dipy:objects.npy")
    with pytest.raises(DataError, match="2-D numeric image"):
        packaged_image("dipy:line.npy")
