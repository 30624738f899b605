"""`meddenoise dicomweb` against a real DICOMweb server: Orthanc and its DICOMweb plugin.

A real series is stored into Orthanc with STOW-RS (dicomweb-client), pulled back with QIDO-RS and
WADO-RS, denoised with `median` and stored again; the derived series must be what `meddenoise
denoise -m median` writes from the same files.  Credentials must never show.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from .conftest import skip_without
from .test_io_dicom import make_series

pytestmark = pytest.mark.skipif(
    skip_without("dicomweb_client"), reason="dicomweb-client not installed (meddenoise[pacs])"
)

SOURCE_SERIES = "1.2.826.0.1.3680043.8.498.7001"
REPORT_SERIES = "1.2.826.0.1.3680043.8.498.7002"
ABSENT_SERIES = "1.2.826.0.1.3680043.8.498.7003"
RIGHT_PASSWORD = "correct-horse-battery-staple-4711"
WRONG_PASSWORD = "wrong-password-Zq81xK"
WRONG_TOKEN = "wrong-token-Ye02uL"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("TOKEN", "USER", "PASSWORD"):
        monkeypatch.delenv(f"MEDDENOISE_DICOMWEB_{name}", raising=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A real four-slice CT series (pydicom's CT_small), one file per instance."""
    folder = tmp_path / "source"
    make_series(folder, series_uid=SOURCE_SERIES, number=3, description="noisy CT")
    return folder


def study_of(folder: Path) -> str:
    return str(pydicom.dcmread(sorted(folder.iterdir())[0]).StudyInstanceUID)


def client(url: str, auth: tuple[str, str] | None = None):
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = auth
    return DICOMwebClient(url, session=session, timeout=20)


def stow(url: str, folder: Path, auth: tuple[str, str] | None = None) -> None:
    """Store every file of `folder` with STOW-RS; all must be accepted."""
    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    response = client(url, auth).store_instances(datasets)
    assert len(response.get("ReferencedSOPSequence", [])) == len(datasets)
    assert not response.get("FailedSOPSequence")


def qido_series(url: str, study: str) -> dict[str, int]:
    """SeriesInstanceUID -> number of instances, as QIDO-RS lists them."""
    found = client(url).search_for_series(study_instance_uid=study)
    return {entry["0020000E"]["Value"][0]: int(entry["00201209"]["Value"][0]) for entry in found}


def pixels_by_uid(paths: list[Path]) -> dict[str, np.ndarray]:
    datasets = [pydicom.dcmread(path) for path in paths]
    return {str(dataset.SOPInstanceUID): dataset.pixel_array for dataset in datasets}


def test_pull_denoise_store_gives_the_series_the_cli_writes(orthanc, source, tmp_path):
    from meddenoise.cli import app as main_app
    from meddenoise.pacs.dicomweb import denoise_dicomweb

    server = orthanc()
    stow(server.dicomweb_url, source)
    study = study_of(source)

    results = denoise_dicomweb(server.dicomweb_url, study, method="median")

    assert [result.status for result in results] == ["written"], results
    result = results[0]
    assert (result.series_uid, result.retrieved, result.derived, result.stored) == (
        SOURCE_SERIES,
        4,
        4,
        4,
    )
    assert result.output is None
    listed = qido_series(server.dicomweb_url, study)
    assert listed == {SOURCE_SERIES: 4, result.derived_series_uid: 4}
    derived = [
        entry for entry in server.list_series() if entry["SeriesInstanceUID"] != SOURCE_SERIES
    ]
    assert len(derived) == 1
    assert derived[0]["StudyInstanceUID"] == study
    assert derived[0]["ImageType"][0] == "DERIVED"
    assert derived[0]["DerivationDescription"].startswith("Denoised by meddenoise")
    stored = tmp_path / "stored"
    stored.mkdir()
    for index, instance in enumerate(derived[0]["instances"]):
        (stored / f"{index}.dcm").write_bytes(server.instance_file(instance))
    stored_pixels = pixels_by_uid(sorted(stored.iterdir()))
    source_uids = {str(pydicom.dcmread(path).SOPInstanceUID) for path in source.iterdir()}
    assert not source_uids & set(stored_pixels)

    # The batch runner on the same files, as a user runs it: the same derived UIDs (they derive
    # from the source UIDs and the method) and the same pixels.
    cli_output = tmp_path / "cli"
    run = CliRunner().invoke(
        main_app, ["denoise", str(source), "-o", str(cli_output), "-m", "median"]
    )
    assert run.exit_code == 0, run.output
    cli_pixels = pixels_by_uid(sorted(cli_output.iterdir()))
    assert set(cli_pixels) == set(stored_pixels)
    for uid, pixels in cli_pixels.items():
        np.testing.assert_array_equal(stored_pixels[uid], pixels)
    # Denoising changed the pixels.
    originals = [pydicom.dcmread(path).pixel_array for path in sorted(source.iterdir())]
    assert not any(
        np.array_equal(original, pixels)
        for original in originals
        for pixels in stored_pixels.values()
    )


def test_command_writes_a_folder_and_skips_what_meddenoise_derived(orthanc, source, tmp_path):
    from meddenoise.pacs.dicomweb_cli import app

    server = orthanc()
    stow(server.dicomweb_url, source)
    study = study_of(source)
    # A structured report in the same study: not images, skipped.
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm", download=False))
    report.StudyInstanceUID = study
    report.SeriesInstanceUID = REPORT_SERIES
    (tmp_path / "report").mkdir()
    report.save_as(tmp_path / "report" / "sr.dcm")
    stow(server.dicomweb_url, tmp_path / "report")
    output = tmp_path / "out"
    runner = CliRunner()
    command = [server.dicomweb_url, study, "-m", "median"]

    # To a folder only: the PACS is left as it was.
    first = runner.invoke(app, [*command, "--no-store", "-o", str(output)])
    assert first.exit_code == 0, first.output
    assert f"written: series {SOURCE_SERIES} (4 retrieved, 4 derived)" in first.stdout
    assert f"skipped: series {REPORT_SERIES}: not images (SOP class 1.2.840.10008.5.1.4.1.1.88" in (
        first.stdout
    )
    assert "1 series denoised (written to" in first.stdout and "1 skipped, 0 failed" in first.stdout
    assert sorted(path.name for path in output.iterdir()) == [SOURCE_SERIES]  # no temp left
    assert len(list((output / SOURCE_SERIES).iterdir())) == 4
    assert qido_series(server.dicomweb_url, study) == {SOURCE_SERIES: 4, REPORT_SERIES: 1}

    # Stored back.
    second = runner.invoke(app, command)
    assert second.exit_code == 0, second.output
    assert f"written: series {SOURCE_SERIES} (4 retrieved, 4 derived, 4 stored)" in second.stdout
    derived_uid = next(
        uid for uid in qido_series(server.dicomweb_url, study) if uid.startswith("2.25.")
    )

    # Again: the derived series is skipped and said so; the original is denoised again with the
    # same derived UIDs, so the PACS still holds one derived series of four instances.
    third = runner.invoke(app, command)
    assert third.exit_code == 0, third.output
    assert f"skipped: series {derived_uid}: already derived by meddenoise" in third.stdout
    assert "1 series denoised (stored), 2 skipped, 0 failed" in third.stdout
    assert qido_series(server.dicomweb_url, study) == {
        SOURCE_SERIES: 4,
        REPORT_SERIES: 1,
        derived_uid: 4,
    }

    only_derived = runner.invoke(app, [*command, "--series", derived_uid])
    assert only_derived.exit_code == 0, only_derived.output
    assert "0 series denoised (stored), 1 skipped, 0 failed" in only_derived.stdout

    absent = runner.invoke(app, [*command, "--series", ABSENT_SERIES])
    assert absent.exit_code == 1
    assert f"no series {ABSENT_SERIES}" in absent.stderr


def test_bad_arguments_exit_2_before_any_request():
    from meddenoise.pacs.dicomweb_cli import app

    runner = CliRunner()
    url = "http://127.0.0.1:9/dicom-web"  # the discard port: nothing answers there
    cases = {
        "not a valid UID": [url, "../../etc"],
        "nothing to do": [url, "1.2.3", "--no-store"],
        "unknown method": [url, "1.2.3", "-m", "no-such-method"],
        "credentials in the URL": [f"http://user:{WRONG_PASSWORD}@127.0.0.1:9/", "1.2.3"],
        "http:// or https://": ["ftp://127.0.0.1/", "1.2.3"],
    }
    for expected, arguments in cases.items():
        result = runner.invoke(app, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert expected in result.stderr
        assert WRONG_PASSWORD not in result.output


def test_credentials_never_show_and_the_right_ones_work(
    orthanc, source, tmp_path, monkeypatch, caplog
):
    from meddenoise.pacs.dicomweb import Credentials, DicomWebError, denoise_dicomweb
    from meddenoise.pacs.dicomweb_cli import app

    server = orthanc(users={"meddenoise": RIGHT_PASSWORD})
    stow(server.dicomweb_url, source, auth=("meddenoise", RIGHT_PASSWORD))
    study = study_of(source)
    runner = CliRunner()
    caplog.set_level(logging.DEBUG)
    secrets = (WRONG_PASSWORD, WRONG_TOKEN, RIGHT_PASSWORD)

    def shown(result) -> str:
        return (
            result.output
            + result.stderr
            + "".join(traceback.format_exception(result.exception) if result.exception else [])
        )

    # A wrong password, from the environment.
    monkeypatch.setenv("MEDDENOISE_DICOMWEB_USER", "meddenoise")
    monkeypatch.setenv("MEDDENOISE_DICOMWEB_PASSWORD", WRONG_PASSWORD)
    wrong_user = runner.invoke(app, [server.dicomweb_url, study, "-m", "median"])
    assert wrong_user.exit_code == 1, wrong_user.output
    assert "HTTP 401" in wrong_user.stderr
    # A wrong bearer token, from the environment and from a file.
    monkeypatch.delenv("MEDDENOISE_DICOMWEB_USER")
    monkeypatch.delenv("MEDDENOISE_DICOMWEB_PASSWORD")
    monkeypatch.setenv("MEDDENOISE_DICOMWEB_TOKEN", WRONG_TOKEN)
    wrong_token = runner.invoke(app, [server.dicomweb_url, study, "-m", "median"])
    monkeypatch.delenv("MEDDENOISE_DICOMWEB_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(WRONG_TOKEN + "\n")
    token_file.chmod(0o600)
    from_file = runner.invoke(
        app, [server.dicomweb_url, study, "-m", "median", "--token-file", str(token_file)]
    )
    for result in (wrong_token, from_file):
        assert result.exit_code == 1, result.output
        assert "HTTP 401" in result.stderr
    # The library's exception, its traceback and every log record.
    with pytest.raises(DicomWebError) as raised:
        denoise_dicomweb(
            server.dicomweb_url,
            study,
            method="median",
            credentials=Credentials(user="meddenoise", password=WRONG_PASSWORD),
        )
    exception_text = "".join(traceback.format_exception(raised.value)) + repr(raised.value)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (shown(wrong_user), shown(wrong_token), shown(from_file), exception_text, logged):
        for secret in secrets:
            assert secret not in text
    assert WRONG_PASSWORD not in repr(Credentials(user="meddenoise", password=WRONG_PASSWORD))

    # The right password: the series is pulled, denoised and stored.
    monkeypatch.setenv("MEDDENOISE_DICOMWEB_USER", "meddenoise")
    monkeypatch.setenv("MEDDENOISE_DICOMWEB_PASSWORD", RIGHT_PASSWORD)
    right = runner.invoke(app, [server.dicomweb_url, study, "-m", "median"])
    assert right.exit_code == 0, right.output
    assert "1 series denoised (stored), 0 skipped, 0 failed" in right.stdout
    for secret in secrets:
        assert secret not in shown(right)
        assert secret not in "\n".join(record.getMessage() for record in caplog.records)


def test_credential_settings_are_checked():
    from meddenoise.pacs.dicomweb import read_credentials

    assert read_credentials(environ={}) is None
    both = {"MEDDENOISE_DICOMWEB_TOKEN": WRONG_TOKEN, "MEDDENOISE_DICOMWEB_USER": "u"}
    alone = {"MEDDENOISE_DICOMWEB_USER": "u"}
    for environ in (both, alone):
        with pytest.raises(ValueError) as raised:
            read_credentials(environ=environ)
        assert WRONG_TOKEN not in str(raised.value)
    basic = read_credentials(
        environ={"MEDDENOISE_DICOMWEB_USER": "u", "MEDDENOISE_DICOMWEB_PASSWORD": WRONG_PASSWORD}
    )
    assert basic is not None and (basic.user, basic.password) == ("u", WRONG_PASSWORD)
    assert WRONG_PASSWORD not in repr(basic)
