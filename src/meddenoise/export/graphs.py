"""What the ONNX and torch.export exports share: example inputs and the dynamic sizes.

Both exporters trace the network once, on example inputs, and keep batch, height and width
symbolic.  The example is deliberately not a multiple of the network's size multiple: traced on
such a size, padding is in the graph (by 0 where a later input needs none), whereas a multiple
would trace the no-padding case and fix it.  Batch 2 keeps the batch symbolic (a traced size of
1 is taken as a constant).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

EXAMPLE_BATCH = 2
EXAMPLE_HEIGHT, EXAMPLE_WIDTH = 75, 91


def example_inputs(network: nn.Module, channels: int) -> tuple[torch.Tensor, ...]:
    """Inputs to trace `network` on: an image and, for conditioned networks, a noise map."""
    generator = torch.Generator().manual_seed(0)  # the values do not matter; the shapes do
    shape = (EXAMPLE_BATCH, channels, EXAMPLE_HEIGHT, EXAMPLE_WIDTH)
    image = torch.rand(shape, generator=generator)
    if not getattr(network, "conditioned", False):
        return (image,)
    return image, torch.full((EXAMPLE_BATCH, 1, EXAMPLE_HEIGHT, EXAMPLE_WIDTH), 0.1)


def named_dynamic_shapes(count: int) -> tuple[dict[int, str], ...]:
    """Batch, height and width of each of `count` inputs, named for the ONNX graph.

    Names, not `torch.export.Dim` objects: torch.onnx turns a name into a free dynamic size
    (and names the graph's axis after it); Dims with a minimum side sent this torch's constraint
    solver into an internal error.
    """
    return tuple({0: "batch", 2: "height", 3: "width"} for _ in range(count))


@contextlib.contextmanager
def size_oblivious() -> Iterator[None]:
    """Trace with size-oblivious reasoning: without it the trace fixed whether padding was
    needed (a guard on the example's size), so other sizes failed or went wrong."""
    import torch.fx.experimental._config as shape_config

    with shape_config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        yield
