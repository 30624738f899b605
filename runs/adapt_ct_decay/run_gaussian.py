"""adapt.benchmark --images final on the Gaussian settings: SEED [MINUTES [SETTING ...]], log kept.
Default: 3 minutes on corr-weak, corr-strong and white."""
import logging
import sys

import meddenoise.adapt.benchmark as B

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
settings = sys.argv[3:] or ["corr-weak", "corr-strong", "white"]
rows, lines = B.run(settings, [minutes], None, seed, images="final")
print(B.table(rows)); print("\n".join(lines))
