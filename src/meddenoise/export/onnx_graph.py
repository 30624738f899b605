"""ONNX export (torch.onnx's dynamo exporter, which needs onnxscript) and the ONNX Runtime backend.

The graph's inputs are ``image`` (B, C, H, W) and, for conditioned networks, ``noise_map``
(B, 1, H, W); its output is ``denoised``.  Batch, height and width are dynamic; sides must be at
least ``min_side`` (the network's size multiple: 8 for the shipped models).  The opset and the
facts in `ExportSource.metadata` are stored as the model's ``metadata_props`` and in the JSON
sidecar ``OUTPUT.json``.

`OnnxRuntimeNetwork` runs such a graph on the CPU; `NeuralDenoiser(backend="onnxruntime")` calls
it in place of the torch network, inside the same tiling.  ONNX Runtime runs fp32 only here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from meddenoise.export.graphs import example_inputs, named_dynamic_shapes, size_oblivious

if TYPE_CHECKING:
    from meddenoise.export import ExportSource

logger = logging.getLogger(__name__)

# Opset 20 is what torch's dynamo exporter writes natively; ONNX Runtime 1.17 and later run it.
OPSET = 20
INPUT_NAMES = ("image", "noise_map")
OUTPUT_NAME = "denoised"


# Exports made in this process, by network (`_network_key`).
_EXPORTED: dict[str, bytes] = {}


def _network_key(network: nn.Module) -> str:
    digest = hashlib.sha256(repr(network).encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def onnx_model_bytes(network: nn.Module, *, channels: int) -> bytes:
    """`network` as a serialised ONNX model with dynamic batch, height and width.

    Exported once per process and weights: a command builds one denoiser per kind of image,
    but the speed benchmark and the tests export the same weights several times.
    """
    key = _network_key(network)
    if key not in _EXPORTED:
        _EXPORTED[key] = _export(network, channels=channels)
    return _EXPORTED[key]


def _export(network: nn.Module, *, channels: int) -> bytes:
    # The exporter logs a warning per torchvision operator it cannot register (torchvision is
    # not a dependency); they are not about this network.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    conditioned = bool(getattr(network, "conditioned", False))
    inputs = example_inputs(network, channels)
    count = 2 if conditioned else 1
    with warnings.catch_warnings(), torch.no_grad(), size_oblivious():
        # The exporter warns about axis names it merges and its own deprecations; the graph is
        # checked against the torch network by the tests instead.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            network.eval(),
            inputs,
            dynamo=True,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES[:count]),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=named_dynamic_shapes(count),
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    return bytes(program.model_proto.SerializeToString())


def add_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """`model_bytes` with `metadata` in its ``metadata_props`` (JSON for what is not a string)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    return bytes(model.SerializeToString())


def write_onnx(source: ExportSource, output: Path) -> None:
    """Write `source`'s network as ONNX to `output` and its metadata to ``output.json``."""
    import onnx

    from meddenoise.export import write_sidecar
    from meddenoise.io.base import atomic_write_with

    model_bytes = onnx_model_bytes(source.network, channels=source.channels)
    opsets = {
        entry.domain or "ai.onnx": entry.version
        for entry in onnx.load_from_string(model_bytes).opset_import
    }
    metadata = {
        **source.metadata("onnx"),
        "opset": opsets.get("ai.onnx", OPSET),
        "onnx_version": onnx.__version__,
    }
    model_bytes = add_metadata(model_bytes, metadata)
    onnx.checker.check_model(onnx.load_from_string(model_bytes))
    atomic_write_with(output, lambda target: target.write_bytes(model_bytes))
    write_sidecar(output, metadata)


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    decoded: dict[str, Any] = {}
    for entry in model.metadata_props:
        try:
            decoded[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            decoded[entry.key] = entry.value
    return decoded


class OnnxRuntimeNetwork:
    """An ONNX graph run by ONNX Runtime on the CPU, called like the torch network it came from.

    Parameters
    ----------
    model : bytes or path
        A serialised ONNX model or its file.
    threads : int, optional
        Intra-op threads; default torch's thread count, so that timings against the torch
        backend compare runtimes and not thread counts.
    """

    def __init__(self, model: bytes | Path, *, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one graph, one stream of operators
        source = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(
            source, options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [entry.name for entry in self.session.get_inputs()]

    def __call__(self, image: torch.Tensor, noise_map: torch.Tensor | None = None) -> torch.Tensor:
        """The denoised (B, C, H, W) float32 tensor for `image` (and its noise map)."""
        tensors = [image] if noise_map is None else [image, noise_map]
        if len(tensors) != len(self.input_names):
            raise ValueError(f"the graph takes {', '.join(self.input_names)}")
        feeds = {
            name: np.ascontiguousarray(tensor.detach().float().cpu().numpy())
            for name, tensor in zip(self.input_names, tensors, strict=True)
        }
        (output,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(np.asarray(output))


def onnxruntime_network(network: nn.Module, *, channels: int) -> OnnxRuntimeNetwork:
    """`network` exported to ONNX in memory (once per process and weights), run by ONNX Runtime."""
    return OnnxRuntimeNetwork(onnx_model_bytes(network, channels=channels))
