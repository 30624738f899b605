"""The DICOM node with a real PACS: Orthanc as its destination, and the Lua routing round trip.

Issue 15's groups 1 (a series sent with storescu lands in Orthanc as a derived series) and 2 (a
series stored into Orthanc is routed to the node by examples/orthanc/route-to-meddenoise.lua and
comes back derived within 30 s, and is never routed again).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from .conftest import skip_without
from .node_harness import (
    NodeProcess,
    flattest_region,
    free_port,
    make_noisy_series,
    node_config,
    noise_std,
    running,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.skipif(skip_without("pynetdicom"), reason="needs the pacs extra")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "orthanc"


def derived_series(orthanc) -> list[dict]:
    return [series for series in orthanc.list_series() if series["ImageType"][:1] == ["DERIVED"]]


def noise_in_orthanc(orthanc, series: dict, clean: np.ndarray) -> float:
    """Mean noise std, in the flattest region, of a series' instances as Orthanc stores them."""
    region = flattest_region(clean)
    stds = []
    for instance in series["instances"]:
        pixels = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance))).pixel_array
        stds.append(float(np.std(pixels.astype(np.float64)[region] - clean[region])))
    return float(np.mean(stds))


def test_a_series_sent_to_the_node_lands_in_orthanc_derived(tmp_path: Path, orthanc) -> None:
    pacs = orthanc(aet="ORTHANC")
    files, clean = make_noisy_series(tmp_path / "series", instances=5)
    config = node_config(tmp_path / "spool", port=free_port(), destination_port=pacs.dicom_port)
    config["destination"]["ae_title"] = "ORTHANC"
    node = NodeProcess(config, tmp_path)
    with running(node):
        assert storescu(node.port, files).returncode == 0
        found = wait_for(
            lambda: [s for s in derived_series(pacs) if s["count"] == 5],
            timeout=60,
            what="the derived series",
        )
    (series,) = found  # type: ignore[misc]
    source = pydicom.dcmread(files[0])
    assert series["StudyInstanceUID"] == str(source.StudyInstanceUID)
    assert series["SeriesInstanceUID"] != str(source.SeriesInstanceUID)
    assert series["DerivationDescription"].startswith("Denoised by meddenoise")
    source_uids = {str(pydicom.dcmread(path).SOPInstanceUID) for path in files}
    derived_uids = {pacs.instance_tags(i)["SOPInstanceUID"] for i in series["instances"]}
    assert len(derived_uids) == 5 and not derived_uids & source_uids
    before = float(np.mean([noise_std(path, clean) for path in files]))
    assert noise_in_orthanc(pacs, series, clean) < 0.8 * before


def test_orthanc_routes_a_stored_series_through_the_node_and_back(tmp_path: Path, orthanc) -> None:
    node_port = free_port()
    pacs = orthanc(
        aet="ORTHANC",
        modalities={"MEDDENOISE": ["MEDDENOISE", "127.0.0.1", node_port]},
        lua=[EXAMPLES / "route-to-meddenoise.lua"],
        stable_age=1,
    )
    config = node_config(
        tmp_path / "spool",
        port=node_port,
        destination_port=pacs.dicom_port,
        processing={"quiet_seconds": 1.0},
    )
    config["destination"]["ae_title"] = "ORTHANC"
    node = NodeProcess(config, tmp_path)
    files, _ = make_noisy_series(tmp_path / "series", instances=4)
    with running(node):
        started = time.monotonic()
        for path in files:
            pacs.upload(path)
        found = wait_for(
            lambda: [s for s in derived_series(pacs) if s["count"] == 4],
            timeout=30,
            what="the whole derived series back in Orthanc",
        )
        elapsed = time.monotonic() - started
        # The derived series is stable in Orthanc after StableAge; the script must not send it
        # to the node again: give it time to (wrongly) do so, then look at the node's table.
        wait_for(
            lambda: all(s["stable"] for s in pacs.list_series()), timeout=30, what="stable series"
        )
        time.sleep(3)
        status = node.status()
    (series,) = found  # type: ignore[misc]
    assert series["count"] == 4
    assert "sent: 1" in status and "receiving: 0" in status and "queued: 0" in status
    assert len(pacs.list_series()) == 2
    print(f"\nOrthanc -> node -> Orthanc round trip: {elapsed:.1f} s")
