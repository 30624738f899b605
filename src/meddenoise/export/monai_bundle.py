"""A MONAI bundle (docs.monai.io, "MONAI Bundle Specification") of a meddenoise network.

Layout written::

    NAME/
      LICENSE                   the code's licence (MIT) and the weights' data licences
      configs/metadata.json     the specification's required keys, plus "meddenoise"
      configs/inference.json    a ConfigParser config: the network, its weights, the denoiser
      models/model.pt           the state dict (tensors only), as the specification asks
      models/model.safetensors  the same weights without pickling (the meddenoise checkpoint)
      docs/README.md            what it is, how to run it, how to make the noise map
      docs/license.txt          the same text as LICENSE (the specification's place for it)
      scripts/                  network.py, common.py (the network's own source), noise_level.py,
                                tiling.py, denoise.py: plain numpy and torch, no meddenoise

The folder is written under a temporary name beside `output` and renamed when complete.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meddenoise.export import ExportSource

SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20220324.json"
)
# The MONAI version the bundle was checked with (tests/test_export.py, under -m slow) where
# MONAI is not installed at export time; meddenoise itself does not use MONAI.
MONAI_TESTED = "1.6.1"
# The specification's mandatory metadata keys (tests check the written file against this list).
REQUIRED_METADATA_KEYS = (
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "optional_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
REQUIRED_TENSOR_KEYS = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)
SCRIPT_FILES = ("__init__.py", "noise_level.py", "tiling.py", "denoise.py")
MODALITIES = {"grey": "CT, CR, DX, MR", "ct-lowdose": "CT", "rgb": "XC, OP, SM"}
LICENSE_TEXT = """MIT License

Copyright (c) meddenoise developers

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def network_sources(network: object) -> dict[str, str]:
    """``{"network.py": ..., "common.py": ...}``: the network's module and `models.common`,
    their one meddenoise import made relative.  ValueError for a network that imports more."""
    from meddenoise.models import common

    module = inspect.getmodule(type(network))
    if module is None:
        raise ValueError(f"cannot find the source of {type(network).__name__}")
    source = inspect.getsource(module)
    source = source.replace("from meddenoise.models.common import", "from .common import")
    if re.search(r"^\s*(from|import)\s+meddenoise", source, flags=re.MULTILINE):
        raise ValueError(f"{type(network).__name__} imports meddenoise modules; cannot bundle it")
    return {"network.py": source, "common.py": inspect.getsource(common)}


def _tensor(channels: int, modality: str, meaning: str, value_range: list[float]) -> dict[str, Any]:
    return {
        "type": "image",
        "format": "magnitude",
        "modality": modality,
        "num_channels": channels,
        "spatial_shape": ["*", "*"],
        "dtype": "float32",
        "value_range": value_range,
        "is_patch_data": False,
        "channel_def": {str(index): meaning for index in range(channels)},
    }


def bundle_metadata(source: ExportSource) -> dict[str, Any]:
    """configs/metadata.json: the specification's keys and a ``meddenoise`` section."""
    import numpy as np
    import torch

    from meddenoise import __version__

    try:
        import monai

        monai_version = str(monai.__version__)
    except ImportError:
        monai_version = MONAI_TESTED
    try:
        import safetensors

        optional = {"safetensors": str(safetensors.__version__)}
    except ImportError:  # pragma: no cover - a meddenoise dependency
        optional = {}
    modality = MODALITIES.get(source.name, "n/a")
    inputs = {
        "image": _tensor(source.channels, modality, "image intensity mapped to [0, 1]", [0, 1])
    }
    if source.conditioned:
        inputs["noise_map"] = _tensor(
            1, "n/a", "noise standard deviation per pixel, in the units of image", []
        )
    outputs = {"pred": _tensor(source.channels, modality, "denoised image, units of image", [])}
    facts = {
        **source.metadata("monai-bundle"),
        "class": type(source.network).__name__,
    }
    return {
        "schema": SCHEMA,
        "version": __version__,
        "changelog": {__version__: f"exported by meddenoise {__version__} from {source.name}"},
        "monai_version": monai_version,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        # The specification's name for it, and the one MONAI reads since it renamed it (MONAI
        # maps the old name to the new one, with a warning, when only the old one is there).
        "optional_packages_version": optional,
        "required_packages_version": optional,
        "name": f"meddenoise {source.name}",
        "task": "Denoising of 2-D medical images, blind (estimated noise level) or told the level",
        "description": (
            f"meddenoise's {source.name!r} network ({source.model}), exported with the noise-level "
            "estimate and tiling it needs (scripts/). Input: one image mapped to [0, 1] and, "
            f"for conditioned networks, its noise map; sides of at least {source.min_side}."
        ),
        "authors": "meddenoise developers",
        "copyright": "Copyright (c) meddenoise developers",
        "intended_use": "Research and image quality work; not for diagnostic use",
        "data_source": "see docs/README.md (the model card: training data and its licences)",
        "data_type": "dicom, nifti, png, tiff",
        "references": [
            "Zhang, Zuo and Zhang, FFDNet, IEEE TIP 27(9):4608-4622, 2018",
            "Zhang et al., Plug-and-Play Image Restoration with Deep Denoiser Prior, TPAMI 2022",
            "Mohan et al., Robust and Interpretable Blind Image Denoising via Bias-Free CNNs, "
            "ICLR 2020",
            "Chen, Zhu and Heng, An Efficient Statistical Method for Image Noise Level "
            "Estimation, ICCV 2015",
        ],
        "network_data_format": {"inputs": inputs, "outputs": outputs},
        "meddenoise": facts,
    }


def inference_config(source: ExportSource) -> dict[str, Any]:
    """configs/inference.json: ConfigParser rebuilds the network, loads model.pt, denoises."""
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": {
            "_target_": f"scripts.network.{type(source.network).__name__}",
            **source.arguments,
        },
        "network": "$@network_def.to(@device).eval()",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": (
            "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, "
            "weights_only=True))"
        ),
        "sigma": None,
        "denoiser": {
            "_target_": "scripts.denoise.BundleDenoiser",
            "network": "@network",
            "level_map": source.level_map,
            "sigma": "@sigma",
        },
        "input_file": "noisy.npy",
        "output_file": "denoised.npy",
        "denoise_file": {
            "_target_": "scripts.denoise.denoise_file",
            "denoiser": "@denoiser",
            "source": "@input_file",
            "target": "@output_file",
        },
        # The weights are loaded before the denoiser first runs: items of a list run in order.
        "run": ["$@load_weights", "@denoise_file"],
    }


def readme(source: ExportSource) -> str:
    """docs/README.md: the bundle's use, its noise map, and the model card where there is one."""
    from meddenoise.methods import weights_folder

    noise = (
        "a per-pixel map from a Poisson-Gaussian fit of each grey image "
        "(`scripts.noise_level.blind_noise_map`), or, where the noise is white, the scalar "
        "`blind_noise_level` everywhere"
        if source.level_map == "signal-dependent"
        else "the scalar `scripts.noise_level.blind_noise_level(image)` everywhere"
    )
    card = weights_folder() / f"{source.name}.md"
    card_text = card.read_text(encoding="utf-8") if card.is_file() else "No model card."
    return f"""# meddenoise `{source.name}` as a MONAI bundle

The `{source.model}` network of meddenoise, exported by `meddenoise export {source.name}
--format monai-bundle`. It denoises one 2-D image at a time: (H, W) grey or (H, W, 3) colour,
intensities mapped to [0, 1] (meddenoise maps a file's own value range, padding excluded, or a
window); the output has the same shape and units. Sides must be at least {source.min_side}
pixels. Research use; not for diagnosis.

## Run it

From this folder, with numpy and torch (no meddenoise, no MONAI needed):

```
python -m scripts.denoise noisy.npy denoised.npy             # noise level estimated
python -m scripts.denoise noisy.npy denoised.npy --sigma 0.02
```

With MONAI (`configs/inference.json`: the network from `scripts/network.py`, the weights from
`models/model.pt`, the denoiser from `scripts/denoise.py`; MONAI's command line needs
`pip install "monai[fire]"`):

```
python -m monai.bundle run --config_file configs/inference.json \\
    --input_file noisy.npy --output_file denoised.npy
```

In Python: `from scripts.denoise import BundleDenoiser, load_network`, then
`BundleDenoiser(load_network()[0], level_map="{source.level_map}")(image)`.

## The noise map

The network takes the image and a noise map: (B, 1, H, W), the standard deviation of the noise
in the image's [0, 1] units at each pixel (a constant map for white noise). Given no level,
the scripts make {noise}. `scripts/tiling.py` cuts large images into 544-pixel tiles sharing
32 pixels and blends them without seams, as meddenoise does.

These scripts run fp32. meddenoise's default (`--precision auto`) runs bf16 on CPUs with
native bf16; `meddenoise denoise --precision fp32` gives what these scripts give (within
1e-4, as meddenoise's tests check).

## Files

`models/model.pt` is the state dict (tensors only: `torch.load(..., weights_only=True)` reads
it); `models/model.safetensors` holds the same weights without pickling (the scripts prefer it
where safetensors is installed). `configs/metadata.json` has the MONAI keys and, under
`meddenoise`, the architecture, its arguments, the kind of noise map and the weights' SHA-256.

## Model card

{card_text}
"""


def write_bundle(source: ExportSource, output: Path) -> None:
    """Write the bundle folder `output` (which must not exist) for `source`."""
    import torch

    from meddenoise.export import bundle_scripts

    if source.level_map not in ("scalar", "signal-dependent"):
        # The bundle's scripts measure levels as the shipped models are told them; an adapted
        # model's rules (`estimate.sub_image_noise_level`, `estimate.flat_window_noise_std`)
        # are not among them.
        rule = {
            "sub-images": "on its pixel-shuffle sub-images",
            "ct-physics": "across the slice by CT physics",
        }.get(source.level_map, "in its flattest windows")
        raise ValueError(
            f"{source.name} is told noise levels measured {rule} ({source.level_map}: an adapted "
            "model); the MONAI bundle cannot do that yet: export it as onnx or torch-export, "
            "whose sidecar names the rule"
        )
    sources = network_sources(source.network)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for folder in ("configs", "models", "docs", "scripts"):
            (temporary / folder).mkdir()

        def write_json(path: Path, value: dict[str, Any]) -> None:
            path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")

        write_json(temporary / "configs" / "metadata.json", bundle_metadata(source))
        write_json(temporary / "configs" / "inference.json", inference_config(source))
        state = {
            name: tensor.detach().cpu().contiguous().clone()
            for name, tensor in source.network.state_dict().items()
        }
        torch.save(state, temporary / "models" / "model.pt")
        shutil.copyfile(source.weights, temporary / "models" / "model.safetensors")
        (temporary / "docs" / "README.md").write_text(readme(source), encoding="utf-8")
        (temporary / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
        (temporary / "docs" / "license.txt").write_text(LICENSE_TEXT, encoding="utf-8")
        template = Path(inspect.getfile(bundle_scripts)).parent
        for name in SCRIPT_FILES:
            shutil.copyfile(template / name, temporary / "scripts" / name)
        for name, text in sources.items():
            (temporary / "scripts" / name).write_text(text, encoding="utf-8")
        os.chmod(temporary, 0o755)  # mkdtemp makes it private; a bundle is for sharing
        os.replace(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
