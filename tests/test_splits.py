"""The test split and the init-chain checks: what config loading, `fit` and ship_model refuse."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from meddenoise.benchmark import TEST_IMAGES
from meddenoise.checkpoint import read_metadata, save_checkpoint
from meddenoise.config import ConfigError, config_to_dict, load_config
from meddenoise.models import build_model
from meddenoise.splits import (
    TEST_SPLIT,
    Link,
    ProvenanceError,
    check_disjoint,
    in_test_split,
    init_lineage,
    lineage_problems,
    members_of_test_split,
    verify_checkpoint,
)
from meddenoise.train import fit

from .conftest import data_file

REPOSITORY = Path(__file__).resolve().parents[1]
WEIGHTS = REPOSITORY / "src" / "meddenoise" / "weights"


def small_config(tmp_path: Path, *, train: list[str], val: list[str], init: str | None = None):
    return {
        "model": {"name": "dncnn", "arguments": {"depth": 3, "features": 8}},
        "data": {
            "mode": "synthetic",
            "train": train,
            "val": val,
            "patch_size": 32,
            "patches_per_epoch": 16,
            "val_size": 64,
        },
        "epochs": 1,
        "init": init,
        "output": str(tmp_path / "run"),
    }


def fake_checkpoint(path: Path, config: dict, network: torch.nn.Module | None = None, **extra):
    """A checkpoint as the chain checks read one (metadata holding its config), with
    `network`'s weights (a stand-in when only the metadata matters)."""
    validated = config_to_dict(load_config(config))
    save_checkpoint(
        path,
        torch.nn.Linear(1, 1) if network is None else network,
        model=config["model"]["name"],
        arguments=config["model"]["arguments"],
        extra={"config": validated, "epoch": 1, **extra},
    )
    return path


def test_every_benchmark_image_and_its_other_transfer_syntaxes_are_in_the_test_split():
    for image in TEST_IMAGES:
        assert f"{image.source}:{image.file_name}" in TEST_SPLIT
    for stem in ("RG1", "693", "MR2"):
        for syntax in ("UNCR", "UNCI", "J2KR", "J2KI"):
            name = f"{stem}_{syntax}.dcm"
            assert f"pydicom:{name}" in TEST_SPLIT
            data_file(name)  # installed, so the names are real files


@pytest.mark.parametrize(
    "entry",
    ["pydicom:693_J2KR.dcm", "skimage:retina", "skimage:immunohistochemistry", "path:693_UNCR.dcm"],
)
def test_test_split_entries_are_recognised_in_any_form(entry, tmp_path):
    if entry.startswith("path:"):
        entry = str(data_file(entry.removeprefix("path:")))
    assert in_test_split(entry)
    assert not in_test_split("pydicom:CT_small.dcm")
    assert not in_test_split("skimage:camera")
    assert not in_test_split(str(data_file("CT_small.dcm")))


def test_a_folder_or_pattern_holding_a_test_file_is_in_the_test_split(tmp_path):
    folder = tmp_path / "scans" / "deep"
    folder.mkdir(parents=True)
    shutil.copyfile(data_file("CT_small.dcm"), folder / "CT_small.dcm")
    assert not in_test_split(str(tmp_path / "scans"))
    shutil.copyfile(data_file("MR2_J2KI.dcm"), folder / "MR2_J2KI.dcm")
    assert members_of_test_split(str(tmp_path / "scans")) == ["pydicom:MR2_J2KI.dcm"]
    assert in_test_split(str(folder / "*.dcm"))


@pytest.mark.parametrize("role", ["train", "val"])
def test_a_config_listing_a_test_split_file_is_refused(tmp_path, role):
    lists = {"train": ["pydicom:CT_small.dcm"], "val": ["pydicom:MR_small.dcm"]}
    lists[role] = [*lists[role], "pydicom:RG1_J2KR.dcm"]
    with pytest.raises(
        ConfigError, match=rf"data\.{role} entry 'pydicom:RG1_J2KR\.dcm'.*test split"
    ):
        load_config(small_config(tmp_path, **lists))
    # The same image given as a path is refused as well.
    lists[role][-1] = str(data_file("RG1_J2KR.dcm"))
    with pytest.raises(ConfigError, match="test split"):
        load_config(small_config(tmp_path, **lists))


def test_paired_folders_holding_a_test_file_are_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "pairs" / split / "high").mkdir(parents=True)
    shutil.copyfile(data_file("693_UNCR.dcm"), tmp_path / "pairs" / "val" / "high" / "693_UNCR.dcm")
    config = small_config(tmp_path, train=[], val=[])
    config["data"] = {"mode": "paired", "root": str(tmp_path / "pairs")}
    with pytest.raises(ConfigError, match=r"data\.val.*693_UNCR\.dcm"):
        load_config(config)


def test_check_disjoint_names_the_shared_images():
    check_disjoint(["pydicom:MR_small.dcm"], ["pydicom:CT_small.dcm"], "the parent")
    with pytest.raises(ProvenanceError, match=r"pydicom:MR_small\.dcm.*the parent"):
        check_disjoint(["pydicom:MR_small.dcm"], ["pydicom:MR_small.dcm", "x"], "the parent")


def contaminated_chain(tmp_path: Path) -> tuple[Path, dict]:
    """A parent trained on MR_small, and a child config that validates on MR_small from it."""
    parent = fake_checkpoint(
        tmp_path / "parent.safetensors",
        small_config(tmp_path, train=["pydicom:MR_small.dcm"], val=["pydicom:CT_small.dcm"]),
    )
    child = small_config(
        tmp_path, train=["pydicom:CT_small.dcm"], val=["pydicom:MR_small.dcm"], init=str(parent)
    )
    return parent, child


def test_ship_check_refuses_a_validation_image_that_the_parent_trained_on(tmp_path):
    parent, child_config = contaminated_chain(tmp_path)
    child = fake_checkpoint(tmp_path / "child.safetensors", child_config)
    with pytest.raises(ProvenanceError, match=rf"MR_small\.dcm.*ancestor {re.escape(str(parent))}"):
        verify_checkpoint(child)
    # With a held-back validation image the same chain passes, and the check names it.
    clean = small_config(
        tmp_path, train=["pydicom:CT_small.dcm"], val=["skimage:camera"], init=str(parent)
    )
    links = verify_checkpoint(fake_checkpoint(tmp_path / "clean.safetensors", clean))
    assert [link.name for link in links] == [str(tmp_path / "clean.safetensors"), str(parent)]


def test_ship_model_script_refuses_a_contaminated_chain_and_writes_nothing(tmp_path):
    _, child_config = contaminated_chain(tmp_path)
    child = fake_checkpoint(tmp_path / "child.safetensors", child_config)
    name = "refused-by-test"
    try:
        script = REPOSITORY / "tools" / "ship_model.py"
        result = subprocess.run(
            [sys.executable, str(script), str(child), "--name", name],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 1, result.stderr
        assert "refusing to ship" in result.stderr and "MR_small.dcm" in result.stderr
        assert not list(WEIGHTS.glob(f"{name}.*"))
    finally:
        for path in WEIGHTS.glob(f"{name}.*"):
            path.unlink()


def test_ancestors_test_split_entries_and_unwalkable_chains_are_refused(tmp_path):
    grandparent = small_config(tmp_path, train=["pydicom:CT_small.dcm"], val=["skimage:camera"])
    grandparent["data"]["train"].append("skimage:retina")  # as an old config might have had it
    parent = small_config(tmp_path, train=["skimage:moon"], val=["skimage:camera"])
    parent["init"] = "runs/grandparent.safetensors"
    # Links hold configs as checkpoints store them: a checkpoint written before config loading
    # refused the test split may hold one.
    links = [
        Link("child", small_config(tmp_path, train=["skimage:coins"], val=["skimage:camera"])),
        Link("parent", parent),
        Link("grandparent", grandparent),
    ]
    problems = lineage_problems(links)
    assert any("grandparent: data.train entry 'skimage:retina'" in line for line in problems)
    # A chain that names itself (init: a shipped name the run's own weights replaced) stops the
    # walk with the reason, and the ship check refuses it.
    path = tmp_path / "self.safetensors"
    config = small_config(tmp_path, train=["skimage:moon"], val=["skimage:camera"], init=str(path))
    fake_checkpoint(path, config)
    with pytest.raises(ProvenanceError, match="already in the chain"):
        verify_checkpoint(path)
    lineage = init_lineage("no/such/weights.safetensors")
    assert lineage.ancestors == [] and "no such weights file" in lineage.unresolved


def test_training_refuses_to_start_on_a_contaminated_chain(tmp_path):
    _, child = contaminated_chain(tmp_path)
    with pytest.raises(ProvenanceError, match=r"refusing to train.*MR_small\.dcm"):
        fit(load_config(child), progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_run_records_its_start_and_its_chain_in_every_checkpoint(tmp_path):
    parent_config = small_config(
        tmp_path, train=["pydicom:MR_small.dcm"], val=["pydicom:CT_small.dcm"]
    )
    network = build_model("dncnn", **parent_config["model"]["arguments"])
    parent = fake_checkpoint(tmp_path / "parent.safetensors", parent_config, network, commit="abc")
    config = small_config(
        tmp_path, train=["pydicom:CT_small.dcm"], val=["skimage:camera"], init=str(parent)
    )
    result = fit(load_config(config), progress=False)
    for path in (result.best, result.last):
        metadata = read_metadata(path)
        assert metadata["commit"] and metadata["dirty"] in (True, False, None)
        assert metadata["sessions"] == [
            {"commit": metadata["commit"], "dirty": metadata["dirty"], "first_epoch": 0}
        ]
        ancestors = metadata["lineage"]["ancestors"]
        assert [ancestor["name"] for ancestor in ancestors] == [str(parent)]
        assert ancestors[0]["commit"] == "abc"
        assert ancestors[0]["config"]["data"]["train"] == ["pydicom:MR_small.dcm"]
    # The recorded chain is what ship_model checks, even after the parent's file is gone.
    parent.unlink()
    assert [link.name for link in verify_checkpoint(result.best)][1:] == [str(parent)]


# The configs that rebuild each shipped model, from scratch to the shipped stage (the cards'
# "Reproduce" lines): their data lists must pass the checks that ship_model makes.
RECIPES = {
    "grey": ["default_stage3b.yaml", "default_stage2.yaml", "default.yaml"],
    "ct-lowdose": [
        "ct_lowdose_stage2.yaml",
        "ct_lowdose.yaml",
        "default_stage2.yaml",
        "default.yaml",
    ],
    "rgb": ["rgb_stage2.yaml", "rgb.yaml", "default_stage2.yaml", "default.yaml"],
}


@pytest.mark.parametrize("name", RECIPES)
def test_the_shipped_models_recipes_pass_the_ship_check(name):
    links = [
        Link(file_name, config_to_dict(load_config(REPOSITORY / "configs" / file_name)))
        for file_name in RECIPES[name]
    ]
    assert lineage_problems(links) == []


def test_every_model_cards_reproduce_hint_names_existing_configs():
    cards = [card for card in sorted(WEIGHTS.glob("*.md")) if card.name != "README.md"]
    assert len(cards) >= 3  # the grey, colour and CT models
    for card in cards:
        text = card.read_text(encoding="utf-8")
        reproduce = next(line for line in text.splitlines() if line.startswith("- Reproduce:"))
        assert re.search(r"configs/[\w*.-]+\.yaml", reproduce), card.name
        # Every config the card names, in the hint or in its reproduce commands, is a file.
        for hint in re.findall(r"configs/[\w*.-]+\.yaml", text):
            assert sorted(REPOSITORY.glob(hint)), f"{card.name}: {hint} matches no file"


def ship_model_script():
    """tools/ship_model.py as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_model", REPOSITORY / "tools/ship_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_model_hint_maps_model_names_to_config_file_names():
    from meddenoise.methods import SHIPPED_MODELS

    ship_model = ship_model_script()
    for name in SHIPPED_MODELS:
        assert sorted(REPOSITORY.glob(ship_model.reproduce_pattern(name))), name


def test_ship_model_card_states_what_was_checked(tmp_path, monkeypatch):
    parent = fake_checkpoint(
        tmp_path / "parent.safetensors",
        small_config(tmp_path, train=["pydicom:MR_small.dcm"], val=["pydicom:CT_small.dcm"]),
    )
    config = small_config(
        tmp_path, train=["pydicom:CT_small.dcm"], val=["skimage:camera"], init=str(parent)
    )
    sessions = [
        {"commit": "abc1234", "dirty": False, "first_epoch": 0},
        {"commit": "def5678", "dirty": True, "first_epoch": 3},
    ]
    child = fake_checkpoint(
        tmp_path / "child.safetensors", config, commit="abc1234", dirty=False, sessions=sessions
    )
    ship_model = ship_model_script()
    monkeypatch.setattr(ship_model, "WEIGHTS", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    monkeypatch.setattr(sys, "argv", ["ship_model.py", str(child), "--name", "ct-lowdose"])
    ship_model.main()
    card = (tmp_path / "weights" / "ct-lowdose.md").read_text(encoding="utf-8")
    assert "commit `abc1234` at run start (tree clean)" in card
    assert "resumed at epoch 3 from commit `def5678` (tree with uncommitted changes)" in card
    assert "(`configs/ct_lowdose*.yaml`)" in card
    assert f"1 ancestor(s) in the init chain (`{parent}`)" in card
    assert "`pydicom:693_J2KI.dcm`" in card and "Never used" not in card


def test_shipped_weights_configs_list_no_test_split_entry():
    # The shipped files' own configs (their init chains cannot be walked: each names the file it
    # replaced), checked as far as they go.
    for path in sorted(WEIGHTS.glob("*.safetensors")):
        config = read_metadata(path)["config"]
        assert lineage_problems([Link(path.name, config)]) == [], path.name
