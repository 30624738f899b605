"""Session 13: the tuning CT with the synthetic objective's clean images
restricted to the base model's 16-bit DICOM training images (no 8-bit photographs)."""
import logging, sys
import meddenoise.adapt.benchmark as B
import meddenoise.adapt.synthetic as S
B.CT_DOSE = float(sys.argv[1]); B.CT_SPACING_MM = float(sys.argv[2])
original = S.base_training_images
def sixteen_bit(checkpoint):
    from meddenoise.config import DataConfig, validated
    from meddenoise.data import load_images
    data = checkpoint.metadata["config"]["data"]
    entries = [e for e in data["train"] if e.startswith("pydicom:")]
    fields = {k: data[k] for k in ("channels", "window") if k in data}
    images = load_images(entries, validated(DataConfig, {**fields, "train": entries, "val": [], "patch_size": 16}, "data"))
    logging.info("clean images: %d from %s", len(images), entries)
    return images
S.base_training_images = sixteen_bit
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("pydicom", "meddenoise.io"):
    logging.getLogger(name).setLevel(logging.ERROR)
rows, lines = B.run(["ct-hamming"], [1, 3, 10], None, 0, images="tuning")
print(B.table(rows)); print("\n".join(lines))
