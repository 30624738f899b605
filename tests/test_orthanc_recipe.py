"""The Orthanc recipe (examples/orthanc/): its configuration runs in Orthanc, its Lua script routes
every stable original series to the meddenoise modality and never a series meddenoise derived.

The modality is dcmtk's ``storescp`` on a free port, recording what it receives; Orthanc runs the
example configuration with the test's storage, ports and a 2 s StableAge.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from .conftest import require_tool
from .pacs import StoreSCP, load_commented_json, wait_for
from .test_io_dicom import make_series

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "orthanc"
SCRIPT = EXAMPLES / "route-to-meddenoise.lua"
ROUTE_TIMEOUT_S = 30.0


@pytest.fixture
def example_config() -> dict:
    return load_commented_json(EXAMPLES / "orthanc.json")


@pytest.fixture
def storescp(tmp_path: Path):
    """dcmtk's storescp as the MEDDENOISE modality: every instance it receives is one file."""
    binary = require_tool("storescp")
    receiver = StoreSCP(tmp_path / "received")
    receiver.start(binary=binary)
    yield receiver
    receiver.stop()


def routing_orthanc(orthanc, config: dict, receiver: StoreSCP):
    """Orthanc with the example configuration and script, MEDDENOISE pointed at `receiver`."""
    modalities = copy.deepcopy(config["DicomModalities"])
    modalities["MEDDENOISE"].update(AET=receiver.aet, Host="127.0.0.1", Port=receiver.port)
    # The HTTP side (basic auth with users to add) is not under test: the test's REST calls.
    return orthanc(
        base=config, modalities=modalities, lua=[SCRIPT], extra={"AuthenticationEnabled": False}
    )


def routed(server, receiver: StoreSCP, count: int) -> list[Path]:
    """Wait until `receiver` holds `count` files and Orthanc's send jobs have all succeeded."""

    def done() -> bool:
        jobs = server.jobs()
        sent = bool(jobs) and all(job["State"] == "Success" for job in jobs)
        return sent and len(receiver.received()) >= count

    try:
        wait_for(done, timeout=ROUTE_TIMEOUT_S, what=f"{count} instances at storescp")
    except AssertionError as error:
        raise AssertionError(f"{error}; Orthanc log:\n{server.log()[-3000:]}") from None
    return receiver.received()


def sop_uids(paths) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in paths}


def test_an_original_series_is_routed_to_the_node(orthanc, example_config, storescp, tmp_path):
    server = routing_orthanc(orthanc, example_config, storescp)
    source = tmp_path / "original"
    make_series(source, series_uid="1.2.826.0.1.3680043.8.498.8001")
    server.upload_folder(source)

    received = routed(server, storescp, 4)
    assert sop_uids(received) == sop_uids(source.iterdir())
    assert "sent to MEDDENOISE" in server.log()


def test_a_series_meddenoise_derived_is_never_routed(orthanc, example_config, storescp, tmp_path):
    from meddenoise.cli import app

    server = routing_orthanc(orthanc, example_config, storescp)
    source = tmp_path / "original"
    make_series(source, series_uid="1.2.826.0.1.3680043.8.498.8002")
    derived = tmp_path / "derived"
    run = CliRunner().invoke(app, ["denoise", str(source), "-o", str(derived), "-m", "median"])
    assert run.exit_code == 0, run.output
    server.upload_folder(derived)
    wait_for(
        lambda: [entry["stable"] for entry in server.list_series()] == [True],
        timeout=ROUTE_TIMEOUT_S,
        what="the derived series to become stable",
    )
    # Lua handles Orthanc's events in order: once a series uploaded after the derived one has
    # arrived, the derived one's turn is over.
    sentinel = tmp_path / "sentinel"
    make_series(sentinel, series_uid="1.2.826.0.1.3680043.8.498.8003", prefix="sentinel")
    server.upload_folder(sentinel)
    received = routed(server, storescp, 4)
    assert sop_uids(received) == sop_uids(sentinel.iterdir())
    assert len(server.jobs()) == 1  # one send: the sentinel's
    assert "was derived by meddenoise: not sent" in server.log()


def test_the_example_allows_only_declared_callers(orthanc, example_config, tmp_path):
    """AE allow-list and called-AE check of the example: only MEDDENOISE (from its host) stores."""
    storescu = require_tool("storescu")
    server = orthanc(base=example_config, extra={"LuaScripts": [], "AuthenticationEnabled": False})
    source = tmp_path / "original"
    make_series(source, slices=1, series_uid="1.2.826.0.1.3680043.8.498.8004")
    file = next(source.iterdir())

    def store(calling: str, called: str) -> int:
        command = [storescu, "-aet", calling, "-aec", called, "127.0.0.1", str(server.dicom_port)]
        subprocess.run([*command, str(file)], capture_output=True, timeout=30, check=False)
        return len(server.get_json("/instances"))

    assert store("INTRUDER", "ORTHANC") == 0  # a calling AE not declared
    assert store("MEDDENOISE", "NOT-ORTHANC") == 0  # the wrong called AE
    assert store("MEDDENOISE", "ORTHANC") == 1  # the node sending its result back
