"""adapt.benchmark --images final --settings ct-hamming: SEED [MINUTES,...] (default 3), log kept."""
import logging
import sys

import meddenoise.adapt.benchmark as B

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
minutes = [float(m) for m in sys.argv[2].split(",")] if len(sys.argv) > 2 else [3.0]
rows, lines = B.run(["ct-hamming"], minutes, None, seed, images="final")
print(B.table(rows)); print("\n".join(lines))
