"""`make demo` end to end: real images, realistic noise, the default method, a report."""

from __future__ import annotations

import re

import pydicom
from typer.testing import CliRunner

from meddenoise.cli import app
from meddenoise.methods import shipped_weights

from .conftest import data_file


def test_demo_writes_outputs_and_a_report_where_denoising_helps(tmp_path):
    output = tmp_path / "demo-output"
    result = CliRunner().invoke(app, ["demo", "--output", str(output)])
    assert result.exit_code == 0, result.output
    report = (output / "report.md").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if re.match(r"\| (CT|CR|MR) ", line)]
    assert len(rows) == 3
    # "default" gives each case the shipped model made for it: the CT case the low-dose CT model.
    expected_ct = "`ct-lowdose`" if shipped_weights("ct-lowdose") else "`grey`"
    assert expected_ct in rows[0]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        psnr_noisy, psnr_denoised = float(cells[3]), float(cells[4])
        ssim_noisy, ssim_denoised = float(cells[5]), float(cells[6])
        assert psnr_denoised > psnr_noisy + 3.0, row
        assert ssim_denoised > ssim_noisy, row
    for folder in ("noisy", "denoised"):
        for name in ("693_UNCR.dcm", "RG1_UNCR.dcm", "MR2_UNCR.dcm"):
            written = pydicom.dcmread(output / folder / name)
            assert "DERIVED" in written.ImageType
    assert len(list((output / "figures").glob("*.png"))) == 3
    for name in ("693_UNCR.dcm", "RG1_UNCR.dcm", "MR2_UNCR.dcm"):
        source = pydicom.dcmread(data_file(name), stop_before_pixels=True)
        for identifier in (str(source.get("PatientName", "")), str(source.get("PatientID", ""))):
            if identifier.strip():
                assert identifier not in report and identifier not in result.output
