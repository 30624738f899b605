"""Scratch: one synthetic adaptation run on the tuning CT (DOSE SPACING SEED MINUTES SHARE), the
learning rate falling to SHARE of itself (1: constant), scored plainly and averaged over the
eight flips and quarter turns (self-ensemble), per case."""
import copy, logging, sys
import numpy as np
import meddenoise.adapt.benchmark as B
from meddenoise.adapt.synthetic import level_map_for, train_for_measured_noise
from meddenoise.adapt.workflow import denoiser_for, hold_back
from meddenoise.arrays import central_crop
from meddenoise.checkpoint import load_checkpoint
from meddenoise.methods import shipped_weights
from meddenoise import metrics

B.CT_DOSE = float(sys.argv[1]); B.CT_SPACING_MM = float(sys.argv[2])
seed, minutes = int(sys.argv[3]), float(sys.argv[4])
import meddenoise.adapt.synthetic as S
S.FINAL_LEARNING_RATE_SHARE = float(sys.argv[5])
images = "tuning"
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
cases = B.ct_cases(B._image_sets()[images].ct, seed)
checkpoint = load_checkpoint(shipped_weights("grey"))
training, held = hold_back([c.noisy[..., None] for c in cases])
import os
if os.environ.get("COVARIANCE_ALL"):  # the noise's covariance measured on every plane too
    measure = S.flat_window_covariance
    S.flat_window_covariance = lambda planes: measure([*planes, *[p[..., 0] for p in held]])
network = copy.deepcopy(checkpoint.network)
rule = level_map_for(["CT"])
trained, _ = train_for_measured_noise(network, checkpoint, [p[..., 0] for p in training],
    seconds=minutes * 60, rng=np.random.default_rng(seed), level_map=rule,
    pixel_spacing_mm=B.CT_SPACING_MM, level_planes=[p[..., 0] for p in held])
adapted = denoiser_for(network, rule, "synthetic", B.CT_SPACING_MM)
base = denoiser_for(checkpoint.network, checkpoint.level_map, "grey")

def ensemble(denoiser, image):
    total = np.zeros_like(image, dtype=np.float64)
    for turns in range(4):
        for flip in (False, True):
            x = np.rot90(image, turns)
            x = x[:, ::-1] if flip else x
            y = denoiser(np.ascontiguousarray(x))
            y = y[:, ::-1] if flip else y
            total += np.rot90(y, -turns)
    return (total / 8).astype(np.float32)

def psnr(case, out):
    return metrics.psnr(central_crop(case.clean, B.CROP), central_crop(out, B.CROP), data_range=1.0)

for label, run in [("noisy", lambda c: c.noisy), ("base", lambda c: base(c.noisy)),
                   ("base x8", lambda c: ensemble(base, c.noisy)),
                   (f"adapted {minutes:g}", lambda c: adapted(c.noisy)),
                   (f"adapted {minutes:g} x8", lambda c: ensemble(adapted, c.noisy))]:
    values = [psnr(c, run(c)) for c in cases]
    print(f"{label:16s} mean {np.mean(values):.2f}  per {[round(v, 2) for v in values]}", flush=True)
print("steps", trained.steps, "levels", np.round(trained.levels, 5).tolist())
