"""Real parts for the DICOM node's tests: a series maker, the node as a process, dcmtk's storescp.

Every process started here is stopped by the context manager that started it, and every wait is
bounded: a test that goes wrong fails in seconds instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import yaml
from pydicom.uid import generate_uid

from .conftest import data_file, require_tool
from .pacs import StoreSCP, free_port, stop_process, wait_for

__all__ = ["StoreSCP", "free_port", "wait_for"]

NOISE_HU = 40.0


def make_noisy_series(
    folder: Path, instances: int = 5, *, seed: int = 0, study_uid: str | None = None
) -> tuple[list[Path], np.ndarray]:
    """A CT series of the real CT_small slice with Gaussian noise of NOISE_HU, one file per slice.

    Returns the files and the noise-free slice (stored values), the reference for noise checks.
    The patient's name and ID are made hostile: they must never reach a log or a path.
    """
    template = pydicom.dcmread(data_file("CT_small.dcm"))
    clean = template.pixel_array.astype(np.float64)
    template.SeriesInstanceUID = generate_uid()
    if study_uid is not None:
        template.StudyInstanceUID = study_uid
    template.PatientName = "Secret^Patient"
    template.PatientID = "../../escape"
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(instances):
        dataset = template.copy()
        noisy = clean + rng.normal(0.0, NOISE_HU / float(template.RescaleSlope), clean.shape)
        dataset.PixelData = np.clip(np.round(noisy), -32768, 32767).astype(np.int16).tobytes()
        dataset.SOPInstanceUID = generate_uid()
        dataset.ImagePositionPatient = [0.0, 0.0, 5.0 * index]
        dataset.InstanceNumber = index + 1
        path = folder / f"slice{index:03d}.dcm"
        dataset.save_as(path)
        files.append(path)
    return files, clean


def flattest_region(clean: np.ndarray, size: int = 16) -> tuple[slice, slice]:
    """The size x size window of the noise-free slice with the least variation."""
    from numpy.lib.stride_tricks import sliding_window_view

    spread = sliding_window_view(clean, (size, size)).std(axis=(-1, -2))
    row, column = np.unravel_index(np.argmin(spread), spread.shape)
    return slice(row, row + size), slice(column, column + size)


def noise_std(path: Path, clean: np.ndarray) -> float:
    """Noise std in the flattest region of the slice: the image's difference from the noise-free
    slice there, in stored units (a flat region, so edges a filter blurs do not count)."""
    region = flattest_region(clean)
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    return float(np.std(pixels[region] - clean[region]))


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def node_config(spool: Path, *, port: int, destination_port: int, **sections: dict) -> dict:
    """A node configuration for tests: the median filter, a 1.5 s quiet period, fast retries."""
    config: dict = {
        "spool": str(spool),
        "listen": {"host": "127.0.0.1", "port": port, "ae_title": "MEDDENOISE"},
        "destination": {"host": "127.0.0.1", "port": destination_port, "ae_title": "DEST"},
        "access": {"calling_ae_titles": ["STORESCU", "ORTHANC", "TESTSCU"]},
        "processing": {"method": "median", "quiet_seconds": 1.5},
        "delivery": {"retry_initial_seconds": 0.3, "retry_max_seconds": 1.0, "timeout_seconds": 5},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


class NodeProcess:
    """`meddenoise node --config` as a real process (so that it can be killed with SIGKILL)."""

    def __init__(self, config: dict, folder: Path) -> None:
        self.config = config
        self.config_path = folder / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = folder / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.config["listen"]["port"])

    def start(self) -> NodeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meddenoise.cli", "node", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        wait_for(self._up, timeout=60, what="the node to listen")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the node exited: {self.log()[-2000:]}")
        return _listening(self.port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)

    def peak_memory_mib(self) -> float:
        """The process's peak resident memory (VmHWM), while it runs."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def status(self) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "meddenoise.cli", "node", "status", "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout + result.stderr


@contextlib.contextmanager
def running(*servers: StoreSCP | NodeProcess) -> Iterator[None]:
    """Start each server in order; stop them all, whatever happens."""
    started: list[StoreSCP | NodeProcess] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            server.stop()


def storescu(
    port: int, files: list[Path], ae_title: str = "STORESCU"
) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending `files` in one association to the node."""
    return subprocess.run(
        [
            require_tool("storescu"),
            "-aet",
            ae_title,
            "-aec",
            "MEDDENOISE",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def send_with_statuses(port: int, files: list[Path], ae_title: str = "TESTSCU") -> list[int]:
    """Send `files` with pynetdicom and return each C-STORE status (-1: no response)."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(path) for path in files]
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in {str(dataset.SOPClassUID) for dataset in datasets}:
        ae.add_requested_context(sop_class)
    association = ae.associate("127.0.0.1", port, ae_title="MEDDENOISE")
    assert association.is_established, "the node refused the association"
    statuses = []
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            statuses.append(int(status.Status) if status and "Status" in status else -1)
    finally:
        association.release()
    return statuses
