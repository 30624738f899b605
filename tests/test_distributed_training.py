"""Training on two processes (torchrun, gloo on the CPU) equals training on one.

Issue 17: two processes reach the weights one process reaches with the combined batch, within
1e-5 in fp32 after a few steps; a run killed mid-way and resumed continues exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from meddenoise.checkpoint import load_checkpoint, seed_global_generators
from meddenoise.config import load_config
from meddenoise.models import build_model
from meddenoise.train import fit

from .node_harness import wait_for

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def small_config(tmp_path: Path, output: str, epochs: int = 2, patches: int = 64) -> Path:
    """A few steps of the shipped architecture (cond_unet, narrow) on real images."""
    config = {
        "model": {
            "name": "cond_unet",
            "arguments": {"channels": 1, "widths": [8, 16], "blocks": [1, 1]},
        },
        "data": {
            "mode": "synthetic",
            "train": ["pydicom:CT_small.dcm", "skimage:camera"],
            "val": ["pydicom:MR_small.dcm"],
            "patch_size": 32,
            "patches_per_epoch": patches,
            "val_size": 64,
        },
        "noise": {"kind": "gaussian", "sigma_range": [10, 40]},
        "epochs": epochs,
        "batch_size": 8,
        "learning_rate": 0.002,
        "precision": "fp32",
        "output": str(tmp_path / output),
    }
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def torchrun(config: Path, *extra: str, processes: int = 2) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            *TORCHRUN,
            "--nproc-per-node",
            str(processes),
            "--standalone",  # a rendezvous on a free port of this host
            "-m",
            "meddenoise",
            "train",
            str(config),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environment,
        start_new_session=True,  # the whole group (torchrun and its workers) can be killed
    )


def finished(process: subprocess.Popen[bytes], config: Path, timeout: float = 300) -> None:
    code = process.wait(timeout=timeout)
    assert code == 0, config.with_suffix(".log").read_text(errors="replace")[-3000:]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).network.state_dict()


def test_two_processes_reach_the_weights_of_one_with_the_combined_batch(tmp_path: Path) -> None:
    single = fit(load_config(small_config(tmp_path, "single")), progress=False)
    config = small_config(tmp_path, "pair")
    finished(torchrun(config), config)
    expected, actual = weights(single.last), weights(tmp_path / "pair" / "last.safetensors")
    assert expected.keys() == actual.keys()
    moved = max(float((expected[k] - actual[k]).abs().max()) for k in expected)
    assert moved <= 1e-5, moved
    # And training moved the weights far more than that: not two copies of the start.
    seed_global_generators(0)
    start = build_model("cond_unet", channels=1, widths=[8, 16], blocks=[1, 1]).state_dict()
    assert max(float((expected[k] - start[k]).abs().max()) for k in expected) > 1e-3


def test_a_killed_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    # Epochs long enough (about a second each) for the kill to land mid-run.
    straight = small_config(tmp_path, "straight", epochs=5, patches=512)
    finished(torchrun(straight), straight)
    config = small_config(tmp_path, "killed", epochs=5, patches=512)
    run = torchrun(config)
    metrics = tmp_path / "killed" / "metrics.csv"
    try:
        wait_for(
            lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2,
            timeout=300,
            what="the first epoch",
        )
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    time.sleep(0.5)
    assert len(metrics.read_text().splitlines()) < 6, "the run ended before it was killed"
    finished(torchrun(config, "--resume"), config)
    expected = weights(tmp_path / "straight" / "last.safetensors")
    actual = weights(tmp_path / "killed" / "last.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_a_batch_the_processes_cannot_share_evenly_is_refused() -> None:
    from meddenoise.distributed import Group, shard

    batch = (torch.zeros(6, 1, 4, 4), None, torch.zeros(6))
    with pytest.raises(ValueError, match="divisible"):
        list(shard(iter([batch]), Group(rank=0, size=4)))
    parts = [next(shard(iter([batch]), Group(rank=rank, size=3)))[0] for rank in range(3)]
    assert [len(part) for part in parts] == [2, 2, 2]
