"""meddenoise: denoising for medical images.

import meddenoise
clean = meddenoise.denoise(noisy)                 # float image in [0, 1], any layout
image = meddenoise.read_image("ct.dcm")           # Image(array in HU, meta)
meddenoise.write_image(image, "out/ct.dcm")       # derived DICOM, atomically
"""

__version__ = "0.1.0"

from meddenoise import metrics, noise
from meddenoise.io import Image, ImageError, read_image, write_image
from meddenoise.methods import list_methods
from meddenoise.pipeline import denoise

__all__ = [
    "Image",
    "ImageError",
    "__version__",
    "denoise",
    "list_methods",
    "metrics",
    "noise",
    "read_image",
    "write_image",
]
