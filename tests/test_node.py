"""The DICOM node against real peers on loopback: dcmtk's storescu/echoscu/storescp, pynetdicom.

Groups as issue 15 lists them: a series in and a derived series out (1), faults (4), access and
limits (5), load (6).  Orthanc's part (1 and 2, with a PACS) is in tests/test_node_orthanc.py.
Every wait is bounded (node_harness.wait_for) and every process is stopped by `running`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from meddenoise.config import ConfigError
from meddenoise.pacs.config import load_node_config
from meddenoise.pacs.spool import Spool

from .conftest import require_tool, skip_without
from .node_harness import (
    NodeProcess,
    StoreSCP,
    free_port,
    make_noisy_series,
    node_config,
    noise_std,
    running,
    send_with_statuses,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.skipif(skip_without("pynetdicom"), reason="needs the pacs extra")

UID_NAME = re.compile(r"^[0-9.]+(\.dcm)?$")


def make_node(tmp_path: Path, destination: StoreSCP, **sections: dict) -> NodeProcess:
    config = node_config(
        tmp_path / "spool", port=free_port(), destination_port=destination.port, **sections
    )
    return NodeProcess(config, tmp_path)


def received_datasets(destination: StoreSCP) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in destination.received()]


def wait_for_instances(destination: StoreSCP, count: int, timeout: float = 60) -> None:
    wait_for(
        lambda: len(destination.received()) >= count,
        timeout=timeout,
        what=f"{count} derived instances at the destination",
    )


def echo(port: int, ae_title: str = "STORESCU") -> int:
    return subprocess.run(
        [require_tool("echoscu"), "-aet", ae_title, "-aec", "MEDDENOISE", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
    ).returncode


# --- configuration and state, without a network ---


def test_a_node_config_names_every_invalid_field(tmp_path: Path) -> None:
    bad = {
        "spool": str(tmp_path),
        "destination": {"port": 70000, "ae_title": "A" * 17},
        "access": {"calling_ae_titles": [], "addresses": ["not-an-address"]},
        "surprise": 1,
    }
    with pytest.raises(ConfigError) as caught:
        load_node_config(bad)
    message = str(caught.value)
    for field in ("destination.port", "destination.ae_title", "access.calling_ae_titles",
                  "access.addresses", "surprise"):  # fmt: skip
        assert field in message


def test_a_relative_spool_is_taken_beside_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "node.yaml"
    path.parent.mkdir()
    path.write_text(
        "spool: spool\ndestination: {port: 104}\naccess: {calling_ae_titles: ['*']}\n",
        encoding="utf-8",
    )
    config = load_node_config(path)
    assert config.spool == path.parent / "spool"
    assert config.access.allows_title("ANYONE")


def test_an_instance_arriving_while_its_series_is_processed_sends_it_round_again(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    series, study = "1.2.3", "1.2"
    for sop in ("1.2.3.1", "1.2.3.2"):
        checked = spool.temporary_path()
        checked.write_bytes(b"x")
        spool.accept(checked, study_uid=study, series_uid=series, sop_uid=sop)
    assert spool.queue_quiet_series(0.0, now=time.time() + 1) == [series]
    claimed = spool.claim_queued()
    assert claimed is not None and len(claimed[2]) == 2
    late = spool.temporary_path()
    late.write_bytes(b"x")
    spool.accept(late, study_uid=study, series_uid=series, sop_uid="1.2.3.3")
    # The worker finishes the generation it claimed: it must not be sent as the series.
    assert not spool.processed(series, claimed[1], instances=2, size=2)
    assert spool.counts()["receiving"] == 1
    spool.queue_quiet_series(0.0, now=time.time() + 1)
    again = spool.claim_queued()
    assert again is not None and len(again[2]) == 3 and again[1] > claimed[1]
    # A crash while processing: the restart queues it again.
    assert spool.recover() == 1
    assert spool.counts()["queued"] == 1
    spool.close()


# --- 1. a series in, a derived series out ---


def test_a_series_sent_with_storescu_comes_back_derived_with_less_noise(tmp_path: Path) -> None:
    files, clean = make_noisy_series(tmp_path / "series", instances=5)
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination)
    with running(destination, node):
        assert echo(node.port) == 0
        sent = storescu(node.port, files)
        assert sent.returncode == 0, sent.stderr
        wait_for_instances(destination, 5)
        time.sleep(0.5)
        derived = received_datasets(destination)
        status = node.status()
    sources = [pydicom.dcmread(path) for path in files]
    assert len(derived) == 5
    assert {str(d.StudyInstanceUID) for d in derived} == {str(sources[0].StudyInstanceUID)}
    assert len({str(d.SeriesInstanceUID) for d in derived}) == 1
    assert str(derived[0].SeriesInstanceUID) != str(sources[0].SeriesInstanceUID)
    assert not {str(d.SOPInstanceUID) for d in derived} & {str(s.SOPInstanceUID) for s in sources}
    assert all(d.ImageType[0] == "DERIVED" for d in derived)
    assert all(str(d.DerivationDescription).startswith("Denoised by meddenoise") for d in derived)
    before = np.mean([noise_std(path, clean) for path in files])
    after = np.mean([noise_std(path, clean) for path in destination.received()])
    assert after < 0.8 * before, (before, after)
    assert "sent: 1" in status
    log = node.log()
    assert "Secret" not in log and "escape" not in log and "Patient" not in log


# --- 4. faults ---


def test_a_node_killed_mid_series_delivers_every_instance_after_restart(tmp_path: Path) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=6)
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination, processing={"quiet_seconds": 4.0})
    with running(destination):
        node.start()
        try:
            assert storescu(node.port, files[:3]).returncode == 0  # acknowledged, not processed
            node.kill()
            assert not destination.received()
            node.start()
            assert storescu(node.port, files[3:]).returncode == 0
            wait_for_instances(destination, 6)
            first = {str(d.SOPInstanceUID) for d in received_datasets(destination)}
            # The sender re-sends the whole series (it never learnt of the first part's fate):
            # the node derives it again with the same UIDs, so the PACS holds it once.
            assert storescu(node.port, files).returncode == 0
            wait_for(
                lambda: "sent: 1" in node.status() and "receiving: 0" in node.status(),
                timeout=60,
                what="the re-sent series to be sent",
            )
            time.sleep(0.5)
        finally:
            node.stop()
        derived = received_datasets(destination)
    assert len(first) == 6
    assert {str(d.SOPInstanceUID) for d in derived} == first
    assert len({str(d.SeriesInstanceUID) for d in derived}) == 1


def test_a_destination_down_for_a_while_gets_everything_once_it_is_up(tmp_path: Path) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=4)
    destination = StoreSCP(
        tmp_path / "received", aet="DEST", port=free_port()
    )  # not started yet: the destination is down
    node = make_node(tmp_path, destination)
    with running(node):
        assert storescu(node.port, files).returncode == 0
        wait_for(
            lambda: re.search(r"sending .* attempts [2-9]", node.status()),
            timeout=60,
            what="two failed attempts to send",
        )
        # Killed while the series waits: the restarted node still sends it.
        node.kill()
        node.start()
        with running(destination):
            wait_for_instances(destination, 4)
            wait_for(
                lambda: "sent: 1" in node.status(),
                timeout=30,
                what="the series to be recorded sent",
            )
    assert "destination unreachable" in node.log()


def test_a_corrupt_instance_is_refused_and_the_rest_of_its_series_delivered(
    tmp_path: Path,
) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=5)
    corrupt = pydicom.dcmread(files[2])
    corrupt.PixelData = corrupt.PixelData[: len(corrupt.PixelData) // 3]  # truncated pixels
    corrupt.save_as(files[2])
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination)
    with running(destination, node):
        statuses = send_with_statuses(node.port, files)
        assert statuses[2] == 0xC000
        assert [status for index, status in enumerate(statuses) if index != 2] == [0] * 4
        assert echo(node.port) == 0
        wait_for_instances(destination, 4)
        assert echo(node.port) == 0


# --- 5. access and limits ---


def test_a_calling_ae_title_not_allowed_is_rejected(tmp_path: Path) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=2)
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination)
    with running(node):
        assert echo(node.port, ae_title="INTRUDER") != 0
        refused = storescu(node.port, files, ae_title="INTRUDER")
        assert "Rejected" in refused.stdout + refused.stderr
        assert echo(node.port) == 0
    assert not list((tmp_path / "spool" / "incoming").iterdir())


def test_an_address_not_allowed_is_refused(tmp_path: Path) -> None:
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination, access={"addresses": ["10.0.0.0/8"]})
    with running(node):
        assert echo(node.port) != 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_tag_values_cannot_name_a_path_outside_the_spool(tmp_path: Path) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=2)  # PatientID ../../escape
    hostile = pydicom.dcmread(files[1])
    hostile.SOPInstanceUID = "../../../outside"
    hostile.save_as(files[1], enforce_file_format=True)
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination)
    with running(destination, node):
        statuses = send_with_statuses(node.port, files)
        wait_for_instances(destination, 1)
    assert statuses == [0, 0xC000]
    spool = tmp_path / "spool"
    named = [p for p in spool.rglob("*") if p.is_file() and p.parent.parent.name == "incoming"]
    assert all(UID_NAME.match(path.name) for path in named)
    assert not [path for path in tmp_path.rglob("*") if "outside" in path.name]
    assert not [path for path in tmp_path.parent.rglob("escape*")]


def test_the_spool_limit_refuses_with_out_of_resources_and_loses_nothing(
    tmp_path: Path,
) -> None:
    files, _ = make_noisy_series(tmp_path / "series", instances=8)
    size = files[0].stat().st_size
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    # Room for three instances and a bit: the fourth is refused.
    limit = (3.5 * size) / 2**30
    node = make_node(
        tmp_path, destination, limits={"spool_limit_gib": limit}, processing={"quiet_seconds": 30}
    )
    with running(destination, node):
        statuses = send_with_statuses(node.port, files)
        accepted = statuses.count(0)
        assert accepted == 3 and set(statuses[3:]) == {0xA700}, [hex(s) for s in statuses]
        node.stop()  # stopped before its quiet period: the accepted instances wait in the spool
        node.config["processing"]["quiet_seconds"] = 1.0
        node.config["limits"]["spool_limit_gib"] = 1.0
        restarted = NodeProcess(node.config, tmp_path)
        with running(restarted):
            wait_for_instances(destination, accepted)


# --- 6. load ---


# The median filter keeps CI fast; the shipped network's figures (docs/deployment.md) come from
# `pytest -m slow -s tests/test_node.py -k concurrent`.
@pytest.mark.parametrize("method", ["median", pytest.param("default", marks=pytest.mark.slow)])
def test_concurrent_associations_are_all_processed_with_bounded_memory(
    tmp_path: Path, method: str
) -> None:
    associations, per_series = 8, 20
    series = [
        make_noisy_series(tmp_path / f"series{index}", instances=per_series, seed=index)[0]
        for index in range(associations)
    ]
    destination = StoreSCP(tmp_path / "received", aet="DEST", port=free_port())
    node = make_node(tmp_path, destination, processing={"method": method})
    total = associations * per_series
    with running(destination, node):
        started = time.monotonic()
        senders = [
            subprocess.Popen(
                [
                    require_tool("storescu"),
                    "-aet",
                    "STORESCU",
                    "-aec",
                    "MEDDENOISE",
                    "127.0.0.1",
                    str(node.port),
                    *map(str, files),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for files in series
        ]
        assert [sender.wait(timeout=120) for sender in senders] == [0] * associations
        wait_for_instances(destination, total, timeout=600)
        node_seconds = time.monotonic() - started
        peak = node.peak_memory_mib()
    started = time.monotonic()
    batch = subprocess.run(
        [
            sys.executable,
            "-m",
            "meddenoise.cli",
            "denoise",
            "-m",
            method,
            *[str(tmp_path / f"series{index}") for index in range(associations)],
            "-o",
            str(tmp_path / "batch"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    batch_seconds = time.monotonic() - started
    assert batch.returncode == 0, batch.stderr
    assert len(destination.received()) == total
    assert peak < 1500, f"peak memory {peak:.0f} MiB"
    print(
        f"\n{method}: node: {total} instances in {node_seconds:.1f} s "
        f"({total / node_seconds:.1f}/s, including a 1.5 s quiet period), "
        f"peak RSS {peak:.0f} MiB; "
        f"CLI batch on the same files: {batch_seconds:.1f} s ({total / batch_seconds:.1f}/s)"
    )


def test_the_example_node_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "node" / "node.yaml"
    config = load_node_config(example)
    assert config.listen.host == "127.0.0.1"
    assert config.spool == example.parent / "spool"
