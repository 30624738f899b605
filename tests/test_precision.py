"""Fresh installs and CPUs without native bf16: what the package needs, how it picks precision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from meddenoise import inference, methods
from meddenoise.cli import app
from meddenoise.inference import NeuralDenoiser, bf16_supported, resolve_precision
from meddenoise.models import build_model

BLOCKED_BM3D = "import sys; sys.modules['bm3d'] = None\n"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_methods_command_runs_without_the_optional_bm3d(tmp_path: Path) -> None:
    result = run_python(
        BLOCKED_BM3D
        + "from typer.testing import CliRunner\n"
        + "from meddenoise.cli import app\n"
        + "result = CliRunner().invoke(app, ['methods'])\n"
        + "print(result.output)\n"
        + "sys.exit(result.exit_code)\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "default" in result.stdout
    assert "not installed: pip install meddenoise[bm3d]" in result.stdout


def test_grey_denoise_runs_without_the_optional_bm3d(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = np.clip(rng.normal(30000, 3000, (40, 56)), 0, 65535).astype(np.uint16)
    PIL.Image.fromarray(array).save(tmp_path / "grey.png")
    result = run_python(
        BLOCKED_BM3D
        + "from typer.testing import CliRunner\n"
        + "from meddenoise.cli import app\n"
        + "result = CliRunner().invoke(app, ['denoise', 'grey.png', '-o', 'out'])\n"
        + "print(result.output)\n"
        + "sys.exit(result.exit_code)\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "grey.png").is_file()


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU like most laptops': AVX2 or AVX-512 without BF16, where bf16 is emulated."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)


def test_detection_ignores_onednn_claim_on_avx512_without_bf16(
    no_native_bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyTorch's oneDNN probe answers true on Skylake / Cascade Lake, which emulate bf16.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert not bf16_supported("cpu")


def test_detection_sees_native_bf16(native_bf16: None) -> None:
    assert bf16_supported("cpu")


@pytest.mark.parametrize("requested", ["auto", "bf16", "fp32"])
def test_no_bf16_where_it_is_emulated(no_native_bf16: None, requested: str) -> None:
    assert resolve_precision(requested, "cpu") == "fp32"


def test_auto_picks_bf16_where_native(native_bf16: None) -> None:
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")


def shipped_grey_denoiser(precision: str) -> NeuralDenoiser:
    denoiser = methods.resolve("grey", precision=precision)
    assert isinstance(denoiser, NeuralDenoiser)
    return denoiser


@pytest.mark.parametrize("requested", ["auto", "bf16"])
def test_shipped_model_runs_fp32_without_native_bf16(
    no_native_bf16: None, monkeypatch: pytest.MonkeyPatch, requested: str
) -> None:
    """The bf16 recorded in the shipped weights no longer decides; autocast is never entered."""
    image = np.random.default_rng(1).random((48, 40)).astype(np.float32)
    reference = shipped_grey_denoiser("fp32")(image)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("bf16 autocast entered on a CPU without native bf16")

    monkeypatch.setattr(torch, "autocast", forbidden)
    denoiser = shipped_grey_denoiser(requested)
    assert denoiser.parameters["precision"] == "fp32"
    np.testing.assert_array_equal(denoiser(image), reference)


def test_shipped_model_uses_bf16_where_native(native_bf16: None) -> None:
    assert shipped_grey_denoiser("auto").parameters["precision"] == "bf16"


def test_a_batch_loads_the_network_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    for index in range(3):
        array = rng.integers(1000, 60000, size=(24, 32)).astype(np.uint16)
        PIL.Image.fromarray(array).save(tmp_path / f"image{index}.png")
    loads: list[Path] = []
    original = methods.load_network

    def counting(path: Path, **kwargs: object) -> object:
        loads.append(path)
        return original(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(methods, "load_network", counting)
    result = CliRunner().invoke(
        app, ["denoise", str(tmp_path), "-o", str(tmp_path / "out"), "--method", "default"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    assert len(loads) == 1


def test_cli_refuses_an_unknown_precision(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["denoise", str(tmp_path), "-o", str(tmp_path / "out"), "--precision", "fp16"]
    )
    assert result.exit_code == 2
    assert "precision" in result.output


def test_explicit_fp32_matches_a_plain_network_call() -> None:
    """`--precision fp32` is plain fp32 arithmetic: the same as calling the network directly."""
    network = build_model("dncnn", channels=1, depth=3, features=8)
    image = np.random.default_rng(3).random((20, 24)).astype(np.float32)
    denoiser = NeuralDenoiser(network, precision="fp32")
    with torch.inference_mode():
        expected = network(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(denoiser(image), expected, atol=1e-6)
    assert inference.resolve_precision("fp32") == "fp32"


@pytest.mark.parametrize(("native", "expected"), [(False, [False]), (True, [True])])
def test_training_in_bf16_runs_bf16_only_where_native(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, expected: list[bool]
) -> None:
    """A config's `precision: bf16` trains in bf16 only on a CPU that has it natively."""
    from meddenoise import train
    from meddenoise.config import load_config

    from .test_train import tiny_config

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    seen: list[bool] = []
    original = train.train_one_epoch

    def recording(*args: object, bf16: bool = False, **kwargs: object) -> float:
        seen.append(bf16)
        return original(*args, bf16=bf16, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train, "train_one_epoch", recording)
    changes = {"precision": "bf16", "epochs": 1, "data.patches_per_epoch": 32}
    train.fit(load_config(tiny_config(tmp_path, **changes)), progress=False)
    assert seen == expected
