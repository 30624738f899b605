"""adapt.benchmark --images final --settings ct-hamming --minutes 1 3 10, with the log kept."""
import logging
import meddenoise.adapt.benchmark as B
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
import sys
rows, lines = B.run(["ct-hamming"], [1, 3, 10], None, int(sys.argv[1]) if len(sys.argv) > 1 else 0, images="final")
print(B.table(rows)); print("\n".join(lines))
