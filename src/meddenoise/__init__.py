"""meddenoise: denoising for medical images.

import meddenoise
clean = meddenoise.denoise(noisy)                 # float image in [0, 1], any layout
image = meddenoise.read_image("ct.dcm")           # Image(array in HU, meta)
denoised = meddenoise.denoise_image(image, "nlm")  # mapped to [0, 1] and back to HU for you
meddenoise.write_image(denoised, "out/ct.dcm")    # derived DICOM, atomically
"""

__version__ = "0.1.0"

from meddenoise import metrics, noise
from meddenoise.io import Image, ImageError, read_image, write_image
from meddenoise.methods import list_methods
from meddenoise.pipeline import denoise, denoise_image

__all__ = [
    "Image",
    "ImageError",
    "__version__",
    "denoise",
    "denoise_image",
    "list_methods",
    "metrics",
    "noise",
    "read_image",
    "write_image",
]
