"""The layering and the absence of import cycles, checked rather than hoped for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "evals", "ingest", "retrieval", "freshrag", "freshrag_client")

pytestmark = pytest.mark.unit


def test_every_package_imports_only_the_layers_below_it():
    """The contracts in pyproject.toml ([tool.importlinter]), checked by import-linter."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_takes_part_in_an_import_cycle():
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    cycles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert not cycles, f"modules importing each other (directly or not): {cycles}"
