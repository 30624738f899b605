"""The low-dose CT robustness grid's machinery on one tiny cell (the full grid is run by hand:
``python -m meddenoise.benchmark ct-grid``)."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise import benchmark
from meddenoise.benchmark import NO_ADDED_NOISE, CtCell, CtSlice, ct_grid_cells, run_ct_grid


def head_like(side: int = 64) -> np.ndarray:
    """Air, a skull-like ring (0.9) and brain-like water (0.52), in the CT window's units."""
    centre = (side - 1) / 2
    y, x = np.mgrid[:side, :side]
    radius = np.hypot(x - centre, y - centre) / side
    image = np.where(radius < 0.42, 0.9, 0.0)
    return np.where(radius < 0.36, 0.52, image).astype(np.float32)


def test_default_grid_is_the_issue_14_grid() -> None:
    cells = ct_grid_cells()
    assert len(cells) == 3 * 3 * 3 + 3
    assert {cell.views for cell in cells} == {720, 360}
    sparse = [cell for cell in cells if cell.views == 360]
    assert {(cell.spacing_mm, cell.dose) for cell in sparse} == {(0.7, 0.25)}


def test_one_tiny_cell_scores_every_method_against_the_noise_free_reference() -> None:
    clean = head_like()
    ct = CtSlice("phantom", original=clean + 0.001, clean=clean, spacing_mm=1.0)
    cell = CtCell(spacing_mm=1.0, dose=0.1, filter_name="hann", views=60)
    rows = run_ct_grid(["median", "identity"], slices=[ct], cells=(cell,))
    noisy = next(row for row in rows if row.cell == cell.label and row.method == "noisy")
    identity = next(row for row in rows if row.cell == cell.label and row.method == "identity")
    # The identity's output is the noisy input: the same score against the same reference.
    assert identity.psnr == pytest.approx(noisy.psnr)
    assert 0 < noisy.noise_hu < 200 and np.isfinite(noisy.psnr)
    # No-harm rows: each method on the real slice against itself; the identity changes nothing.
    unchanged = next(row for row in rows if row.cell == NO_ADDED_NOISE and row.method == "identity")
    assert unchanged.psnr == np.inf or unchanged.psnr > 99
    assert {row.method for row in rows} == {"noisy", "median", "identity"}


def test_a_report_and_heat_map_from_the_command(tmp_path) -> None:
    # One real CT slice (pydicom's CT_small, 128²), its first cell, one fast method: the whole
    # path of `python -m meddenoise.benchmark ct-grid`, clean-reference step included.
    pytest.importorskip("bm3d")
    output = tmp_path / "grid"
    arguments = ["ct-grid", "-m", "median", "--images", "pydicom:CT_small.dcm", "--cells", "1"]
    benchmark.main([*arguments, "-o", str(output)])
    report = (output / "ct-grid.md").read_text(encoding="utf-8")
    assert "0.5 mm, 10%, ramp, 720 views" in report
    assert "`median`" in report and "pydicom:CT_small.dcm" in report
    assert (output / "ct-grid.png").stat().st_size > 0
    lines = (output / "ct-grid.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 2 + 1  # header, noisy and median in the cell, median unchanged


def test_views_that_do_not_divide_the_largest_are_refused() -> None:
    ct = CtSlice("phantom", head_like(32), head_like(32))
    cells = (CtCell(1.0, 0.5, "ramp", 40), CtCell(1.0, 0.5, "ramp", 30))
    with pytest.raises(ValueError, match="divide"):
        run_ct_grid(["median"], slices=[ct], cells=cells, no_harm=False)


def test_the_cli_option_fails_cleanly_on_an_unknown_method(tmp_path) -> None:
    from typer.testing import CliRunner

    from meddenoise.cli import app

    result = CliRunner().invoke(
        app, ["benchmark", "--ct-grid", "-m", "no-such-method", "-o", str(tmp_path / "grid")]
    )
    assert result.exit_code == 1
    assert "no-such-method" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "grid").exists()
