"""The networks, one file each, and the table that names them.

Every network is a plain `torch.nn.Module` mapping a (B, C, H, W) float tensor (C = 1 or 3,
intensities in [0, 1], any H x W) to a tensor of the same shape; constructor arguments are
keyword-only.  ``conditioned`` (a class attribute) says whether ``forward`` also takes a noise map:
``model(x, noise_map)`` for conditioned networks, ``model(x)`` for the others.
``size_multiple`` (an instance attribute) is the multiple H and W are padded to inside ``forward``;
tiles of that multiple avoid the padding.

To add a network: write ``models/mynet.py`` and add one line to `MODELS`.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from meddenoise.models.cond_unet import CondUNet
from meddenoise.models.dncnn import DnCNN
from meddenoise.models.encoder_decoder import EncoderDecoder
from meddenoise.models.gondara_cdae import GondaraCDAE
from meddenoise.models.pd_cond_unet import PDCondUNet
from meddenoise.models.red_cnn import REDCNN
from meddenoise.models.resnet18_unet import ResNet18UNet
from meddenoise.models.unet_gan import PatchDiscriminator, UNetGenerator

__all__ = [
    "MODELS",
    "REDCNN",
    "CondUNet",
    "DnCNN",
    "EncoderDecoder",
    "GondaraCDAE",
    "PDCondUNet",
    "PatchDiscriminator",
    "ResNet18UNet",
    "UNetGenerator",
    "build_model",
]

MODELS: dict[str, type[nn.Module]] = {
    "encoder_decoder": EncoderDecoder,
    "resnet18_unet": ResNet18UNet,
    "gondara_cdae": GondaraCDAE,
    "unet_gan": UNetGenerator,
    "dncnn": DnCNN,
    "red_cnn": REDCNN,
    "cond_unet": CondUNet,
    "pd_cond_unet": PDCondUNet,  # CondUNet on pixel-shuffle sub-images (meddenoise adapt)
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """The network registered as `name`, built with `kwargs` as its constructor arguments.

    Raises ValueError for an unknown name (listing the known ones) and for an unknown or invalid
    argument (naming it), so a bad config is reported by the field at fault.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    cls = MODELS[name]
    accepted = [
        parameter
        for parameter in inspect.signature(cls).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    accepted_names = [parameter.name for parameter in accepted]
    for argument in kwargs:
        if argument not in accepted_names:
            raise ValueError(
                f"model {name!r} has no argument {argument!r}; "
                f"its arguments are: {', '.join(accepted_names)}"
            )
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(f"model {name!r}: {error}") from error
