"""Shared fixtures: real DICOM files from pydicom and pydicom-data (never downloaded)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file


def data_file(name: str) -> Path:
    """Path of a file shipped by pydicom or pydicom-data; fails (never downloads) if missing."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"test file {name} is not installed (pip install pydicom-data)")
    return Path(path)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def require_tool(name: str) -> str:
    """Path of a system tool; skipped on a user's machine without it, a failure under CI=true."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return found


def skip_without(module: str) -> bool:
    """Whether a test needing optional `module` may skip: only on a user's machine without it.

    Under CI=true it never skips, so a missing extra fails the test instead of hiding it.
    """
    import importlib.util

    in_ci = os.environ.get("CI", "").lower() == "true"
    return importlib.util.find_spec(module) is None and not in_ci


@pytest.fixture
def copy_of(tmp_path: Path):
    """Copy a test-data file into tmp_path so tests can check it stays byte-identical."""

    def make(name: str) -> Path:
        target = tmp_path / "inputs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_file(name), target)
        return target

    return make


@pytest.fixture
def orthanc(tmp_path: Path):
    """A factory of Orthanc servers on loopback (tests/pacs.py); every one is stopped afterwards.

    ``orthanc(modalities={"NODE": ["NODE", "127.0.0.1", port]}, lua=[script], aet="PACS")``
    returns a started `pacs.Orthanc` (DICOMweb plugin loaded, StableAge 2 s).  Skipped without
    Orthanc on a user's machine, a failure under CI=true.
    """
    from .pacs import DICOMWEB_PLUGIN, Orthanc, orthanc_binary

    binary = orthanc_binary() or require_tool("Orthanc")  # Debian's is in /usr/sbin
    if not DICOMWEB_PLUGIN.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{DICOMWEB_PLUGIN} is required in CI (.ci/run installs orthanc-dicomweb)")
        pytest.skip("Orthanc's DICOMweb plugin (orthanc-dicomweb) not installed")
    started: list[Orthanc] = []

    def start(**options) -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc-{len(started)}", **options)
        started.append(server)
        return server.start(binary=binary)

    yield start
    for server in started:  # stopping takes Orthanc about 3 s: all of them at once
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
    for server in started:
        server.stop()
