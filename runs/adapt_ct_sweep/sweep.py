"""Issue 18 GPU sweep (scratch, not committed): CT adaptation variants from `grey` on the tuning CT,
scored at the step counts that 1 / 3 / 10 minutes give on 2 AVX2 cores (90 steps a minute).
usage: python3 .sweep/sweep.py OUTDIR VARIANT [VARIANT ...]"""
import json, math, os, sys, time, types
import numpy as np, torch
import scipy.ndimage as ndi
pkg = types.ModuleType("meddenoise"); pkg.__path__ = [os.path.abspath("src/meddenoise")]
sys.modules["meddenoise"] = pkg
from meddenoise.models.cond_unet import CondUNet  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.set_num_threads(1)
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
STEPS = tuple(int(v) for v in os.environ.get("STEPS", "90,270,900").split(","))
BATCH, PATCH, GRID = 8, 96, 128
SLACK = (0.85, 1.3)
import io, lzma
D = np.load(io.BytesIO(lzma.decompress(open(".sweep/data.npz.xz", "rb").read())))
u = lambda a: a.astype(np.float64) / 32768 - 0.25
IMAGES = [u(D[k]).astype(np.float32) for k in sorted((k for k in D if k.startswith("img")), key=lambda s: int(s[3:]))]
IMAGES = [i for i in IMAGES if min(i.shape) >= PATCH]


def cases(dose, q=0.1):
    out = []
    for k in range(3):
        key = f"d{dose}_{k}"
        noisy, clean = u(D[key + "_noisy"]).astype(np.float32), u(D[key + "_clean"]).astype(np.float32)
        big = lambda m: ndi.zoom(D[key + "_" + m], 8, order=1)[: noisy.shape[0], : noisy.shape[1]].astype(np.float32)
        maps = {m: big(m) for m in ("true", "local", "shape")}
        ratio = maps["local"] / np.sqrt(maps["shape"])
        maps["phys"] = (np.quantile(ratio, q) * np.sqrt(maps["shape"])).astype(np.float32)
        out.append(dict(noisy=noisy, clean=clean, **maps))
    return out


def amplitude(cov, side):
    lag = cov.shape[0] // 2
    kernel = np.zeros((side, side)); off = np.arange(-lag, lag + 1) % side
    kernel[np.ix_(off, off)] = cov
    spec = np.maximum(np.real(np.fft.fft2(kernel)), 0)
    return np.sqrt(spec / spec.mean())


def noise(amp, count, rng):
    white = rng.standard_normal((count, *amp.shape))
    return np.real(np.fft.ifft2(np.fft.fft2(white) * amp)).astype(np.float32)


def dihedral(a, t):
    a = np.rot90(a, t % 4)
    return a[:, ::-1] if t >= 4 else a


def patches(images, count, rng, weights=None, extra=()):
    w = np.array([i.size for i in images], float) if weights is None else weights
    idx = rng.choice(len(images), size=count, p=w / w.sum())
    out = np.empty((count, 1 + len(extra), PATCH, PATCH), np.float32)
    for s, i in enumerate(idx):
        im = images[i]; t = int(rng.integers(0, im.shape[0] - PATCH + 1)); l = int(rng.integers(0, im.shape[1] - PATCH + 1)); tr = int(rng.integers(0, 8))
        out[s, 0] = dihedral(im[t:t + PATCH, l:l + PATCH], tr)
        for j, e in enumerate(extra):
            out[s, 1 + j] = dihedral(e[i][t:t + PATCH, l:l + PATCH], tr)
    return out


def level_range(maps):
    lo = min(float(np.quantile(m, 0.05)) for m in maps) * 0.5
    hi = max(float(np.quantile(m, 0.95)) for m in maps) * 1.5
    return max(lo, hi * 1e-3), hi


def synthetic_batch(amp, levels, rng, images=None):
    clean = patches(images or IMAGES, BATCH, rng)[:, :1]
    told = np.exp(rng.uniform(math.log(levels[0]), math.log(levels[1]), BATCH)).astype(np.float32)
    slack = np.exp(rng.uniform(math.log(SLACK[0]), math.log(SLACK[1]), BATCH)).astype(np.float32)
    n = noise(amp, BATCH, rng)[:, :PATCH, :PATCH][:, None]
    return clean + n * (told * slack)[:, None, None, None], np.broadcast_to(told[:, None, None, None], (BATCH, 1, PATCH, PATCH)).copy(), clean


def r2r_batch(amp, slices, maps, alpha, rng):
    """Recorrupted-to-recorrupted on the user's noisy slices: input y + a z, target y - z / a,
    z drawn with the measured texture times the level map; told sqrt(1 + a^2) x the map."""
    p = patches(slices, BATCH, rng, extra=(maps,))
    y, level = p[:, :1], p[:, 1:2]
    z = noise(amp, BATCH, rng)[:, :PATCH, :PATCH][:, None] * level
    return y + alpha * z, math.sqrt(1 + alpha ** 2) * level, y - z / alpha


def psnr(clean, out):
    c = lambda a: a[128:384, 128:384]
    return 10 * math.log10(1.0 / float(np.mean((c(clean) - c(out)) ** 2)))


def run(variant, dose, cov, base_state, log):
    opts = dict(q=0.1, rule="local", lr=1e-4, loss="l1", r2r=0.0, alpha=0.5, r2r_rule=None, blind=False, steps=STEPS[-1], range_rule=None)
    for part in variant.split("+"):
        if part in ("local", "true", "phys", "map"):
            opts["rule"] = "local" if part == "map" else part
            continue
        if part == "blind":
            opts["blind"] = True
            continue
        k, _, v = part.partition("=")
        assert k in opts, k
        opts[k] = float(v) if k in ("lr", "r2r", "alpha", "steps", "q") else v
    cs = cases(dose, float(opts['q']))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = CondUNet(channels=1, widths=(64, 128, 256), blocks=(2, 2, 2)).to(DEV)
    net.load_state_dict(base_state)
    amp = amplitude(cov, GRID)
    rule = opts["rule"]
    levels = level_range([c[opts["range_rule"] or rule] for c in cs])
    const = math.sqrt(levels[0] * levels[1])
    slices = [c["noisy"] for c in cs]
    r2r_maps = [c[opts["r2r_rule"] or rule] for c in cs]
    opt = torch.optim.Adam(net.parameters(), lr=float(opts["lr"]))

    def score(step):
        net.eval(); ps = []
        with torch.no_grad():
            for c in cs:
                told = np.full_like(c["noisy"], const) if opts["blind"] else c[rule]
                x = torch.from_numpy(c["noisy"])[None, None].to(DEV); m = torch.from_numpy(told)[None, None].to(DEV)
                ps.append(psnr(c["clean"], net(x, m)[0, 0].cpu().numpy()))
        net.train()
        rec = dict(variant=variant, dose=dose, step=step, mean=round(float(np.mean(ps)), 3), per=[round(p, 2) for p in ps], levels=[round(v, 5) for v in levels])
        log.write(json.dumps(rec) + "\n"); log.flush(); print(json.dumps(rec), flush=True)

    score(0)
    started = time.time()
    for step in range(1, int(opts["steps"]) + 1):
        if opts["r2r"] and rng.uniform() < float(opts["r2r"]):
            noisy, told, target = r2r_batch(amp, slices, r2r_maps, float(opts["alpha"]), rng)
        else:
            noisy, told, target = synthetic_batch(amp, levels, rng)
        if opts["blind"]:
            told = np.full_like(told, const)
        noisy, told, target = (torch.from_numpy(np.ascontiguousarray(a)).to(DEV) for a in (noisy, told, target))
        out = net(noisy, told)
        loss = torch.nn.functional.l1_loss(out, target) if opts["loss"] == "l1" else torch.nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if step in STEPS or step == int(opts["steps"]):
            score(step)
    return time.time() - started


if __name__ == "__main__":
    outdir = sys.argv[1]; os.makedirs(outdir, exist_ok=True)
    base = {k: v for k, v in load_file("src/meddenoise/weights/grey.safetensors").items()}
    for variant in sys.argv[2:]:
        with open(os.path.join(outdir, "all.jsonl"), "a") as log:
            for dose in (10, 50):
                seconds = run(variant, dose, D[f"cov_d{dose}"], base, log)
                print(variant, dose, "seconds", round(seconds, 1), flush=True)
