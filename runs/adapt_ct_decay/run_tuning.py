"""adapt.benchmark ct-hamming on the tuning CT: DOSE SPACING [SEED [MINUTES,...]] (learning rate decayed)."""
import logging, sys
import meddenoise.adapt.benchmark as B
B.CT_DOSE = float(sys.argv[1]); B.CT_SPACING_MM = float(sys.argv[2])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
rows, lines = B.run(["ct-hamming"], [int(m) for m in sys.argv[4].split(",")] if len(sys.argv) > 4 else [1, 3, 10], None, int(sys.argv[3]) if len(sys.argv) > 3 else 0, images="tuning")
print(B.table(rows)); print("\n".join(lines))
