"""Scratch: adapt.benchmark's ct-hamming on the tuning CT at a chosen dose and spacing."""
import logging, sys
import meddenoise.adapt.benchmark as B
B.CT_DOSE = float(sys.argv[1]); B.CT_SPACING_MM = float(sys.argv[2])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
rows, lines = B.run(["ct-hamming"], [1, 3, 10], None, 0, images="tuning")
print(B.table(rows)); print("\n".join(lines))
