"""torch.export: the network as an `ExportedProgram`, saved with `torch.export.save` (``.pt2``).

For C++ (AOTInductor) and Triton users; TorchScript, the older route, is deprecated.  Batch,
height and width are symbolic; sides must be at least ``min_side``.  The metadata of
`ExportSource.metadata` is stored in the archive (``extra_files["meddenoise.json"]``) and in the
sidecar ``OUTPUT.json``.  A ``.pt2`` archive holds code as well as weights: `torch.export.load`
of a file from elsewhere runs what it holds, so load only files you made or trust.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from meddenoise.export.graphs import example_inputs, size_oblivious

if TYPE_CHECKING:
    from meddenoise.export import ExportSource

METADATA_FILE = "meddenoise.json"


def export_program(network: nn.Module, *, channels: int) -> torch.export.ExportedProgram:
    """`network` traced by `torch.export.export` with symbolic batch, height and width.

    Every size is `Dim.DYNAMIC` and size-oblivious: named dims with a minimum side sent this
    torch's constraint solver into an internal error, and without size-oblivious reasoning the
    trace fixed whether padding was needed.  The guards it cannot prove become runtime checks in
    the program (a side below the network's size multiple fails one).
    """
    inputs = example_inputs(network, channels)
    dynamic = torch.export.Dim.DYNAMIC
    shapes = tuple({0: dynamic, 2: dynamic, 3: dynamic} for _ in inputs)
    with warnings.catch_warnings(), size_oblivious():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices
        return torch.export.export(
            network.eval(),
            inputs,
            dynamic_shapes=shapes,
            prefer_deferred_runtime_asserts_over_guards=True,
        )


def write_torch_export(source: ExportSource, output: Path) -> None:
    """Write `source`'s network as a torch.export archive to `output` (and ``output.json``)."""
    from meddenoise.export import write_sidecar
    from meddenoise.io.base import atomic_write_with

    program = export_program(source.network, channels=source.channels)
    metadata = source.metadata("torch-export")
    extra = {METADATA_FILE: json.dumps(metadata, sort_keys=True)}
    atomic_write_with(output, lambda target: torch.export.save(program, target, extra_files=extra))
    write_sidecar(output, metadata)
