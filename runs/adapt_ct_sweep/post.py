import numpy as np
from meddenoise.estimate import flat_window_covariance
from meddenoise.methods import resolve
D = dict(np.load("/work/main/.sweep/data.npz"))
u = lambda a: a.astype(np.float64) / 32768 - 0.25
grey = resolve("grey", precision="fp32")
for dose in (10, 50):
    planes = [u(D[f"d{dose}_{k}_noisy"]) for k in range(3)]
    D[f"cov_d{dose}"] = flat_window_covariance(planes)
    ps, pn = [], []
    for k, p in enumerate(planes):
        c = u(D[f"d{dose}_{k}_clean"])
        f = lambda a: 10 * np.log10(1 / np.mean((a[128:384, 128:384] - c[128:384, 128:384]) ** 2))
        pn.append(f(p)); ps.append(f(grey(p.astype(np.float32))))
    print(dose, "noisy", np.round(np.mean(pn), 2), np.round(pn, 2), "grey", np.round(np.mean(ps), 2), np.round(ps, 2), flush=True)
np.savez_compressed("/work/main/.sweep/data.npz", **D)
