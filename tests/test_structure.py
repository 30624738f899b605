"""The layout stays the one docs/architecture.md draws: checked on the source, not by eye."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "meddenoise"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path) -> set[str]:
    """meddenoise modules `path` imports at module level (not inside functions, not for types)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("meddenoise"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("meddenoise"):
            module = node.module or ""
            folder = PACKAGE.parent / module.replace(".", "/")
            # `from meddenoise import noise` imports the module meddenoise.noise; importing a
            # name defined in a package's __init__ imports the package.
            for alias in node.names:
                if (folder / f"{alias.name}.py").is_file() or (folder / alias.name).is_dir():
                    found.add(f"{module}.{alias.name}")
                else:
                    found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {imported for imported in module_level_imports(path) if imported in modules}
        for name, path in modules.items()
    }


def test_no_import_cycle_between_modules_at_module_level() -> None:
    graph = import_graph()
    # A package's __init__ re-exports its modules; importing the package runs it first, so
    # edges into a package __init__ from its own modules are the only ones allowed to close.
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        visiting.append(name)
        for imported in sorted(graph[name]):
            if name.startswith(imported + "."):  # a module importing its own package
                continue
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_cycle_check_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = {"meddenoise.a": {"meddenoise.b"}, "meddenoise.b": {"meddenoise.a"}}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle_between_modules_at_module_level()


def run_blocked(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + block + code],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_noise_estimation_needs_no_torch() -> None:
    result = run_blocked(
        "import numpy as np\n"
        "from meddenoise.estimate import blind_noise_level, estimate_sigma\n"
        "rng = np.random.default_rng(0)\n"
        "print(round(blind_noise_level(0.5 + rng.normal(0, 0.1, (128, 128))), 2))\n",
        "torch",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1"


def test_noise_models_need_no_torch() -> None:
    result = run_blocked("import meddenoise.noise\nimport meddenoise.metrics\n", "torch")
    assert result.returncode == 0, result.stderr


def test_heavy_optional_packages_are_imported_lazily() -> None:
    """Importing the package and its command line loads neither bm3d nor matplotlib."""
    result = run_blocked(
        "import meddenoise, meddenoise.cli, meddenoise.benchmark, meddenoise.train\n",
        "bm3d",
        "matplotlib",
    )
    assert result.returncode == 0, result.stderr


def count_lines(name: str) -> int:
    return len((PACKAGE / name).read_text(encoding="utf-8").splitlines())


def test_cli_is_thin() -> None:
    assert count_lines("cli.py") < 350


def test_train_is_the_loop() -> None:
    assert count_lines("train.py") < 450


def test_the_command_starts_without_importing_torch() -> None:
    # Every package registers its command at start (meddenoise.commands): none may pull torch in
    # at import, or every command, `--help` included, starts seconds slower.
    code = "import sys, meddenoise.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
