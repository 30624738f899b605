"""Adapt a shipped model to a scanner: self-supervised fine-tuning on the user's own noisy images.

``meddenoise adapt INPUTS -o MODEL.safetensors`` (`meddenoise.adapt.cli`) calls `adapt`; the
objective is in `objectives`, the no-harm guard in `guard`, the benchmark in
``python -m meddenoise.adapt.benchmark``.  docs/adapt.md has the workflow and the measurements.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meddenoise.adapt.workflow import AdaptProgress, AdaptResult, adapt

__all__ = ["AdaptProgress", "AdaptResult", "adapt"]


def __getattr__(name: str) -> Any:
    # Lazily: `meddenoise adapt` is registered with every command, and importing the workflow
    # imports torch, which would slow every command's start (`meddenoise --help` included).
    if name in __all__:
        from meddenoise.adapt import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
