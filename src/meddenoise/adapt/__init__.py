"""Adapt a shipped model to a scanner: self-supervised fine-tuning on the user's own noisy images.

``meddenoise adapt INPUTS -o MODEL.safetensors`` (`meddenoise.adapt.cli`) calls `adapt`; the
objective is in `objectives`, the no-harm guard in `guard`, the benchmark in
``python -m meddenoise.adapt.benchmark``.  docs/adapt.md has the workflow and the measurements.
"""

from meddenoise.adapt.workflow import AdaptProgress, AdaptResult, adapt

__all__ = ["AdaptProgress", "AdaptResult", "adapt"]
