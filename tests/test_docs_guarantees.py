"""docs/guarantees.md names tests that exist, so the map from promises to tests cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_guarantees_name_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)

    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M)
    ]

    assert len(named) > 50
    assert not missing, missing


def test_the_readme_points_to_the_guarantees() -> None:
    assert "docs/guarantees.md" in (ROOT / "README.md").read_text(encoding="utf-8")
