"""meddenoise export: ONNX, torch.export and the MONAI bundle, and the onnxruntime backend.

Every export is checked against the torch network on sizes not used when tracing (odd ones too),
and the bundle's scripts against meddenoise itself on a real CT slice, in a process where
importing meddenoise fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meddenoise.checkpoint import save_checkpoint
from meddenoise.cli import app
from meddenoise.export import export_model, load_source
from meddenoise.export.graphs import EXAMPLE_HEIGHT, EXAMPLE_WIDTH
from meddenoise.inference import NeuralDenoiser, TilingOptions
from meddenoise.io import read_image
from meddenoise.methods import checkpoint_path, load_network, resolve
from meddenoise.models import build_model

from .conftest import data_file, skip_without

pytestmark = pytest.mark.skipif(
    skip_without("onnxruntime") or skip_without("onnxscript") or skip_without("onnx"),
    reason="the export extra is not installed (pip install 'meddenoise[export]')",
)

# (batch, height, width): none is the traced example's size; odd, prime and minimal sides.
SIZES = [(1, 77, 101), (2, 64, 64), (1, 8, 9), (1, 131, 45)]
assert all((h, w) != (EXAMPLE_HEIGHT, EXAMPLE_WIDTH) for _, h, w in SIZES)
TOLERANCE = 1e-4
# The keys the MONAI bundle specification makes mandatory in configs/metadata.json, and in
# each tensor format of its network_data_format (docs.monai.io, mb_specification).
SPEC_METADATA_KEYS = {
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
}
SPEC_TENSOR_KEYS = {
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
}


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-level cond_unet checkpoint with seeded random weights: traced faster than the
    shipped three-level one, the same code paths (padding, noise map, skips).  Its level map
    is signal-dependent, as the shipped grey model's."""
    torch.manual_seed(0)  # the weights' initialisation: torch's global generator, seeded here
    network = build_model("cond_unet", channels=1, widths=(16, 32), blocks=(1, 1))
    path = tmp_path_factory.mktemp("checkpoint") / "small.safetensors"
    config = {"noise": {"level_map": "signal-dependent"}}
    save_checkpoint(
        path,
        network,
        model="cond_unet",
        arguments={"channels": 1, "widths": [16, 32], "blocks": [1, 1]},
        extra={"config": config},
    )
    return path


@pytest.fixture(scope="module")
def exports(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small checkpoint as ONNX and torch.export, the shipped grey model as a bundle."""
    folder = tmp_path_factory.mktemp("exports")
    return {
        "onnx": export_model(small_checkpoint, "onnx", folder / "small.onnx"),
        "torch-export": export_model(small_checkpoint, "torch-export", folder / "small.pt2"),
        "monai-bundle": export_model("grey", "monai-bundle", folder / "grey-bundle"),
    }


@pytest.fixture(scope="module")
def small_network(small_checkpoint: Path) -> torch.nn.Module:
    return load_source(small_checkpoint).network


def inputs(batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image and a per-pixel noise map (varying, so a map read wrongly would show)."""
    generator = torch.Generator().manual_seed(height * 1000 + width)
    image = torch.rand((batch, 1, height, width), generator=generator)
    noise_map = 0.02 + 0.08 * torch.rand((batch, 1, height, width), generator=generator)
    return image, noise_map


def ct_slice(rows: slice = slice(150, 351), columns: slice = slice(160, 333)) -> np.ndarray:
    """An odd-sized crop of a real CT slice (pydicom-data), mapped to [0, 1] as meddenoise does."""
    image = read_image(data_file("693_UNCR.dcm"))
    unit = image.meta.mapping.to_unit(image.array.astype(np.float32))
    return np.ascontiguousarray(unit[rows, columns], dtype=np.float32)


def test_onnx_runtime_matches_torch_on_sizes_not_exported(
    exports: dict[str, Path], small_network: torch.nn.Module
) -> None:
    import onnx

    from meddenoise.export.onnx_graph import OnnxRuntimeNetwork

    path = exports["onnx"]
    model = onnx.load(str(path))
    assert [entry.name for entry in model.graph.input] == ["image", "noise_map"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [bool(dim.dim_param) for dim in dims] == [True, False, True, True]  # B, H, W dynamic
    properties = {entry.key: entry.value for entry in model.metadata_props}
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert int(properties["opset"]) == sidecar["opset"] == opset
    assert sidecar["conditioned"] is True and sidecar["level_map"] == "signal-dependent"
    runtime = OnnxRuntimeNetwork(path)
    for size in SIZES:
        image, noise_map = inputs(*size)
        with torch.inference_mode():
            expected = small_network(image, noise_map)
        difference = (runtime(image, noise_map) - expected).abs().max().item()
        assert difference < TOLERANCE, (size, difference)


def test_torch_export_matches_torch_on_sizes_not_exported(
    exports: dict[str, Path], small_network: torch.nn.Module
) -> None:
    path = exports["torch-export"]
    extra = {"meddenoise.json": ""}
    program = torch.export.load(path, extra_files=extra)  # our own file: code-bearing, trusted
    assert json.loads(extra["meddenoise.json"])["source"] == "small.safetensors"
    module = program.module()
    for size in SIZES:
        image, noise_map = inputs(*size)
        with torch.inference_mode():
            difference = (module(image, noise_map) - small_network(image, noise_map)).abs().max()
        assert difference.item() < TOLERANCE, (size, difference)


def test_onnxruntime_backend_matches_torch_backend_through_the_tiling(
    small_checkpoint: Path,
) -> None:
    image = ct_slice()  # 201 x 173: several 96-pixel tiles
    tiling = TilingOptions(tile_size=96, overlap=32, margin=8)
    results = {}
    for backend in ("torch", "onnxruntime"):
        denoiser = load_network(small_checkpoint, precision="fp32", backend=backend)
        assert isinstance(denoiser, NeuralDenoiser)
        denoiser.tiling = tiling
        results[backend] = denoiser(image)
        assert (denoiser.parameters.get("backend") == "onnxruntime") == (backend != "torch")
    assert results["torch"].shape == image.shape
    assert np.abs(results["onnxruntime"] - results["torch"]).max() < TOLERANCE
    # bf16 is not offered by this backend: asked for, it runs fp32 (and says so in the log).
    bf16 = resolve(small_checkpoint, precision="bf16", backend="onnxruntime")
    assert bf16.parameters["precision"] == "fp32"


def test_backends_are_checked() -> None:
    with pytest.raises(ValueError, match="classical"):
        resolve("nlm", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be"):
        resolve("grey", backend="tensorrt")


def test_export_command(tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["export", "grey", "--format", "torchscript", "-o", "x.pt"])
    assert refused.exit_code == 2 and "torch-export" in refused.output
    unknown = runner.invoke(app, ["export", "nope", "--format", "onnx", "-o", "x.onnx"])
    assert unknown.exit_code == 2 and "shipped model" in unknown.output
    target = tmp_path / "bundle"
    target.mkdir()
    exists = runner.invoke(app, ["export", "grey", "--format", "monai-bundle", "-o", str(target)])
    assert exists.exit_code == 2 and "exists" in exists.output
    written = runner.invoke(
        app, ["export", "ct-lowdose", "--format", "monai-bundle", "-o", str(tmp_path / "ct")]
    )
    assert written.exit_code == 0, written.output
    assert (tmp_path / "ct" / "configs" / "metadata.json").is_file()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no leftovers


def test_denoise_command_runs_on_onnxruntime(tmp_path: Path, small_checkpoint: Path) -> None:
    from PIL import Image as PILImage

    png = tmp_path / "in" / "ct.png"
    png.parent.mkdir()
    image = ct_slice(slice(200, 264), slice(200, 264))
    PILImage.fromarray((image * 65535).astype(np.uint16)).save(png)
    runner = CliRunner()
    command = ["denoise", str(png), "-o", str(tmp_path / "out"), "-m", str(small_checkpoint)]
    result = runner.invoke(app, [*command, "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "ct.png").is_file()
    classical = ["denoise", str(png), "-o", str(tmp_path / "o2"), "-m", "nlm"]
    refused = runner.invoke(app, [*classical, "--backend", "onnxruntime"])
    assert refused.exit_code == 2 and "classical" in refused.output


def test_bundle_files_and_metadata_follow_the_specification(exports: dict[str, Path]) -> None:
    bundle = exports["monai-bundle"]
    for name in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "models/model.safetensors",
        "docs/README.md",
        "LICENSE",
        "scripts/__init__.py",
        "scripts/network.py",
        "scripts/noise_level.py",
        "scripts/tiling.py",
        "scripts/denoise.py",
    ):
        assert (bundle / name).is_file(), name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(metadata) >= SPEC_METADATA_KEYS
    formats = metadata["network_data_format"]
    assert set(formats["inputs"]) == {"image", "noise_map"} and set(formats["outputs"]) == {"pred"}
    for tensor in [*formats["inputs"].values(), *formats["outputs"].values()]:
        assert set(tensor) >= SPEC_TENSOR_KEYS
    assert metadata["meddenoise"]["level_map"] == "signal-dependent"
    # model.pt is a plain state dict: the restricted unpickler reads it.
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(state) == set(load_source("grey").network.state_dict())
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_def"]["_target_"] == "scripts.network.CondUNet"
    source = (bundle / "scripts" / "network.py").read_text()
    assert "from .common import" in source and "import meddenoise" not in source


def test_bundle_noise_estimate_is_meddenoises() -> None:
    from meddenoise.estimate import blind_noise_level, blind_noise_map
    from meddenoise.export.bundle_scripts import noise_level

    clean = ct_slice()
    noisy = noisy_ct(clean)
    for image in (clean, noisy):
        assert noise_level.blind_noise_level(image) == pytest.approx(
            blind_noise_level(image), rel=1e-9
        )
    expected = blind_noise_map(noisy)
    assert expected is not None  # Poisson-Gaussian noise: the per-pixel map path
    found = noise_level.blind_noise_map(noisy)
    assert found is not None and np.abs(found - expected).max() < 1e-6
    colour = np.stack([clean, noisy, clean], axis=-1)
    assert noise_level.blind_noise_level(colour) == pytest.approx(
        blind_noise_level(colour), rel=1e-9
    )


def noisy_ct(clean: np.ndarray) -> np.ndarray:
    """`clean` with Poisson-Gaussian noise (100 photons at full scale), from a fixed generator."""
    rng = np.random.default_rng(17)
    photons = 100.0
    counts = rng.poisson(np.clip(clean, 0, None) * photons) / photons
    return (counts + rng.normal(0.0, 0.01, clean.shape)).astype(np.float32)


def test_bundle_scripts_reproduce_meddenoise_without_it(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    bundle = exports["monai-bundle"]
    clean = ct_slice()
    cases = {"clean": clean, "noisy": noisy_ct(clean)}
    denoiser = load_network(checkpoint_path("grey"), precision="fp32")
    assert isinstance(denoiser, NeuralDenoiser)
    denoiser.tiling = TilingOptions(tile_size=96, overlap=32, margin=8)
    arguments = []
    for name, image in cases.items():
        np.save(tmp_path / f"{name}.npy", image)
        arguments.append([str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}-out.npy")])
    # meddenoise made unimportable: any import of it in the scripts fails the run.
    code = (
        "import sys\n"
        "sys.modules['meddenoise'] = None\n"
        "from scripts.denoise import main\n"
        f"for pair in {arguments!r}:\n"
        "    main([*pair, '--tile-size', '96'])\n"
        "loaded = [name for name, module in sys.modules.items() if module is not None]\n"
        "assert not [name for name in loaded if name.startswith('meddenoise')], loaded\n"
    )
    environment = {**os.environ, "PYTHONPATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=bundle,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for name, image in cases.items():
        found = np.load(tmp_path / f"{name}-out.npy")
        expected = denoiser(image)
        assert found.shape == image.shape
        assert np.abs(found - expected).max() < TOLERANCE, name


@pytest.mark.slow
@pytest.mark.skipif(skip_without("monai"), reason="MONAI is not installed")
def test_monai_config_parser_rebuilds_the_network(exports: dict[str, Path], tmp_path: Path) -> None:
    bundle = exports["monai-bundle"]
    image = noisy_ct(ct_slice())
    np.save(tmp_path / "noisy.npy", image)
    code = (
        "import sys\n"
        "from monai.bundle import ConfigParser\n"
        "parser = ConfigParser()\n"
        "parser.read_config('configs/inference.json')\n"
        "parser.read_meta('configs/metadata.json')\n"
        f"parser['input_file'] = {str(tmp_path / 'noisy.npy')!r}\n"
        f"parser['output_file'] = {str(tmp_path / 'denoised.npy')!r}\n"
        "parser['denoiser']['tile_size'] = 96\n"
        "parser.get_parsed_content('run')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    denoiser = load_network(checkpoint_path("grey"), precision="fp32")
    assert isinstance(denoiser, NeuralDenoiser)
    denoiser.tiling = TilingOptions(tile_size=96, overlap=32, margin=8)
    found = np.load(tmp_path / "denoised.npy")
    assert np.abs(found - denoiser(image)).max() < TOLERANCE


@pytest.mark.parametrize("native_bf16", [True, False])
def test_speed_rows_time_onnxruntime_beside_torch_fp32(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    """The onnxruntime rows sit in the fp32 process beside torch's, never in the AVX2 one."""
    from meddenoise import benchmark

    calls: list[tuple[list[str], str]] = []

    def fake_time(methods: list[str], *, precision: str = "auto", repeats: int = 3):
        chosen = ("bf16" if native_bf16 else "fp32") if precision == "auto" else precision
        calls.append((list(methods), chosen))
        return benchmark.Timings(dict.fromkeys(methods, 1.0), chosen, "AVX512", native_bf16)

    def fake_module(arguments: list[str], environment: dict[str, str] | None = None) -> object:
        methods = list(arguments[5:])  # after: speed --precision fp32 --repeats N
        calls.append((methods, "fp32 AVX2"))
        return {
            "seconds": dict.fromkeys(methods, 2.0),
            "precision": "fp32",
            "capability": "AVX2",
            "native_bf16": False,
        }

    monkeypatch.setattr(benchmark, "time_methods", fake_time)
    monkeypatch.setattr(benchmark, "_run_module", fake_module)
    monkeypatch.setattr(benchmark, "cpu_description", lambda: {"native_bf16": native_bf16})
    rows = benchmark.run_speed(["grey", "grey@onnxruntime", "bm3d"], large=False, repeats=1)
    onnx_rows = [row for row in rows if row.method == "grey@onnxruntime"]
    assert [(row.setting, row.precision) for row in onnx_rows] == [("native", "fp32")]
    fp32_process = next(methods for methods, precision in calls if precision == "fp32")
    assert {"grey", "grey@onnxruntime"} <= set(fp32_process)  # timed interleaved
    capped = next(methods for methods, precision in calls if precision == "fp32 AVX2")
    assert "grey@onnxruntime" not in capped and "grey" in capped
