"""The archive batch on a real Dask LocalCluster (two one-thread worker processes).

Issue 17: the outputs equal the serial command's (pixels and every DICOM attribute but the
creation date and time); a rerun does no work; a worker killed mid-run leaves every output
complete (its items run again elsewhere).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from meddenoise.batch import DenoiserPerKind, denoise_item, plan_batch, run_batch

from .conftest import data_file, skip_without
from .node_harness import make_noisy_series

pytestmark = pytest.mark.skipif(skip_without("distributed"), reason="needs the dask extra")

SKIPPED_ATTRIBUTES = {"InstanceCreationDate", "InstanceCreationTime"}


def make_archive(root: Path) -> Path:
    """Real files of three formats: a CT series, CR and MR slices, PNGs and NIfTI volumes."""
    archive = root / "archive"
    make_noisy_series(archive / "ct_series", instances=4)
    (archive / "slices").mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copyfile(data_file(name), archive / "slices" / name)
    ct = pydicom.dcmread(data_file("CT_small.dcm")).pixel_array
    photo = archive / "photos"
    photo.mkdir()
    PILImage.fromarray((ct - ct.min()).astype(np.uint16)).save(photo / "ct16.png")
    PILImage.fromarray((255 * (ct - ct.min()) / np.ptp(ct)).astype(np.uint8)).save(
        photo / "ct8.png"
    )
    nifti_data = Path(nib.__file__).parent / "tests" / "data"
    volumes = archive / "volumes"
    volumes.mkdir()
    shutil.copyfile(nifti_data / "anatomical.nii", volumes / "anatomical.nii")
    return archive


def comparable(path: Path) -> object:
    """What must agree between two outputs of one file: pixels, and for DICOM every attribute
    but the creation date and time."""
    if path.suffix == ".dcm" or path.parent.name == "ct_series":
        dataset = pydicom.dcmread(path)
        return {
            element.keyword or str(element.tag): element.value
            for element in dataset
            if element.keyword not in SKIPPED_ATTRIBUTES and element.tag != 0x7FE00010
        }, dataset.PixelData
    if path.suffix == ".nii":
        image = nib.load(path)
        return np.asarray(image.dataobj).tobytes(), image.affine.tobytes()
    return np.asarray(PILImage.open(path)).tobytes()


def outputs(folder: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(folder)): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".meddenoise" not in path.parts
    }


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client, LocalCluster

    local = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
    )  # fmt: skip
    client = Client(local)
    yield client
    client.close()
    local.close()


def test_a_dask_run_equals_the_serial_run_and_a_rerun_does_no_work(tmp_path: Path, cluster):
    from meddenoise.scale.distributed_batch import DenoiseSettings, run_batch_on_dask

    archive = make_archive(tmp_path)
    settings = DenoiseSettings(method="median")
    serial = run_batch(
        plan_batch([archive], tmp_path / "serial"),
        denoise_item(DenoiserPerKind(settings.build)),
    )
    results = run_batch_on_dask(
        plan_batch([archive], tmp_path / "dask"), settings, tmp_path / "dask", cluster
    )

    assert [r.status for r in results] == [r.status for r in serial]
    assert {r.status for r in results} == {"written"}
    expected, got = outputs(tmp_path / "serial"), outputs(tmp_path / "dask")
    assert sorted(expected) == sorted(got) and len(got) >= 9
    for name in expected:
        assert comparable(got[name]) == comparable(expected[name]), name
    record = tmp_path / "dask" / ".meddenoise"
    with open(record / "manifest.csv", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(results)
    stamps = {name: path.stat().st_mtime_ns for name, path in got.items()}

    again = run_batch_on_dask(
        plan_batch([archive], tmp_path / "dask"), settings, tmp_path / "dask", cluster
    )

    assert {r.status for r in again} == {"skipped"}
    assert {name: path.stat().st_mtime_ns for name, path in outputs(tmp_path / "dask").items()} \
        == stamps  # fmt: skip
    with open(record / "results.csv", encoding="utf-8") as handle:
        assert {row["status"] for row in csv.DictReader(handle)} == {"skipped"}


def test_a_worker_killed_mid_run_leaves_every_output_complete(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    from meddenoise.scale.distributed_batch import DenoiseSettings, run_batch_on_dask

    archive = tmp_path / "archive"
    for index in range(6):
        make_noisy_series(archive / f"series{index}", instances=3, seed=index)
    # NLM is slow enough for a worker to die with items in hand.
    settings = DenoiseSettings(method="nlm")
    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address="127.0.0.1:0", host="127.0.0.1")  # fmt: skip
    client = Client(local)
    killed: list[int] = []
    try:

        def kill_one_worker(result: object) -> None:
            if killed:
                return
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

        started = time.monotonic()
        results = run_batch_on_dask(
            plan_batch([archive], tmp_path / "out"),
            settings,
            tmp_path / "out",
            client,
            on_result=kill_one_worker,
        )
        assert time.monotonic() - started < 300
    finally:
        client.close()
        local.close()
    assert killed
    # An item the dead worker had finished, whose result died with it, runs again and finds
    # its outputs complete: "skipped", not written twice.
    assert {r.status for r in results} <= {"written", "skipped"} and len(results) == 6
    written = outputs(tmp_path / "out")
    assert len(written) == 18
    assert not [path for path in (tmp_path / "out").rglob("*") if path.name.endswith(".part")]
    for path in written.values():
        assert pydicom.dcmread(path).pixel_array.shape == (128, 128)  # complete, decodable


def test_the_command_runs_an_archive_on_a_local_cluster_and_resumes(tmp_path: Path) -> None:
    import subprocess
    import sys

    archive = tmp_path / "archive"
    make_noisy_series(archive / "series", instances=3)
    command = [sys.executable, "-m", "meddenoise", "denoise", str(archive), "-m", "median"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=300, env=environment
        )

    serial = run("-o", str(tmp_path / "serial"))
    first = run("-o", str(tmp_path / "dask"), "--dask", "local:2")
    again = run("-o", str(tmp_path / "dask"), "--dask", "local:2")

    assert serial.returncode == first.returncode == again.returncode == 0, first.stderr
    expected, got = outputs(tmp_path / "serial"), outputs(tmp_path / "dask")
    assert sorted(expected) == sorted(got) and len(got) == 3
    for name in expected:
        assert comparable(got[name]) == comparable(expected[name]), name
    assert "1 written" in first.stdout
    assert "0 written" in again.stdout and "1 already written" in again.stdout
    assert (tmp_path / "dask" / ".meddenoise" / "results.csv").is_file()
