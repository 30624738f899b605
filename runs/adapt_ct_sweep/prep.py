"""Precompute the sweep's inputs (carried to the GPU machine): grey's clean training images (uint16),
tuning CT cases at two doses with oracle, physics and local level maps (maps at 1/8 size)."""
import numpy as np, scipy.ndimage as ndi
import meddenoise.adapt.benchmark as B
from meddenoise.adapt import synthetic as S
from meddenoise.adapt.ct_noise import variance_shape
from meddenoise.benchmark import load_ct_slice
from meddenoise.checkpoint import load_checkpoint
from meddenoise.estimate import local_noise_std_map, flat_window_covariance
from meddenoise.methods import shipped_weights
from meddenoise.noise import LowDoseCT

def q16(a):  # [0,1]-ish float -> uint16 with offset (values can dip below 0 / above 1 with noise)
    return np.clip(np.round((np.asarray(a, np.float64) + 0.25) * 32768), 0, 65535).astype(np.uint16)

ck = load_checkpoint(shipped_weights("grey"))
imgs = S.base_training_images(ck)
out = {f"img{i}": q16(im[..., 0]) for i, im in enumerate(imgs)}
entries = B._image_sets()["tuning"].ct + (("eCT brain", "pydicom:eCT_Supplemental.dcm"),)
for dose, spacing in ((0.1, 1.0), (0.5, 0.7)):
    rng = np.random.default_rng(0)
    for k, (label, entry) in enumerate(entries):
        s = load_ct_slice(entry, clean_reference=True)
        m = LowDoseCT(dose_fraction=dose, pixel_spacing_mm=spacing, filter_name="hamming", filter_cutoff=0.5)
        sino = m.sinogram(s.clean); ref = m.noise_free_from_sinogram(sino, s.clean.shape)
        draws = np.stack([m.noisy_from_sinogram(sino, s.clean.shape, rng) - ref for _ in range(9)])
        noisy = ref + draws[0]
        true = np.sqrt(ndi.uniform_filter((draws[1:] ** 2).mean(0), 15))
        local = local_noise_std_map(noisy)
        shape = variance_shape(noisy, spacing)
        key = f"d{int(dose*100)}_{k}"
        out[key + "_noisy"] = q16(noisy); out[key + "_clean"] = q16(ref)
        for name, mp in (("true", true), ("local", local), ("shape", shape)):
            out[key + "_" + name] = ndi.zoom(mp, 1 / 8, order=1).astype(np.float32)
        # the true PSD (for a white-ish comparison) is not needed; measured covariance is
        print(key, label, noisy.shape, "true med", np.median(true), flush=True)
np.savez_compressed("/work/main/.sweep/data.npz", **out)
import os; print(os.path.getsize("/work/main/.sweep/data.npz") / 1e6, "MB")
