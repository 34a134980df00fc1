"""The documentation site builds in strict mode (a broken link or anchor fails), its
generated references cover the code, and the README stays one or two screens."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150


@functools.cache
def _hooks() -> ModuleType:
    """docs/_hooks.py, the mkdocs hook (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _env_vars() -> list[str]:
    from freshrag.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper() for name in Settings.model_fields]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_site_builds_strict(site: Path) -> None:
    for page in ("index.html", "tutorial/first-steps/index.html", "reference/cli/index.html"):
        assert (site / page).is_file(), page
    assert not list(site.rglob("_hooks.py")), "the hook module must not be published"


def test_configuration_page_lists_every_setting(site: Path) -> None:
    html = (site / "reference" / "configuration" / "index.html").read_text()
    missing = [var for var in _env_vars() if var not in html]
    assert not missing, f"not on the configuration page: {missing}"


def test_settings_generator_covers_every_field() -> None:
    text = _hooks().settings_markdown()
    missing = [var for var in _env_vars() if f"`{var}`" not in text]
    assert not missing, missing


def test_cli_page_lists_every_command(site: Path) -> None:
    hooks = _hooks()
    cli = hooks.load_cli()
    html = (site / "reference" / "cli" / "index.html").read_text()
    for name in cli.commands:
        assert f"freshrag {name}" in html, name


def test_no_marker_left_unexpanded(site: Path) -> None:
    for page in site.rglob("*.html"):
        assert "<!-- gen:" not in page.read_text(), page


def test_bench_renderer_takes_any_shape(tmp_path: Path) -> None:
    """A results file that gains phases, nested phases or keys renders without code changes;
    a missing or half-written file is a note, not a failed build."""
    hooks = _hooks()
    result = {
        "benchmark": "freshness",
        "command": ".venv/bin/python -m bench.freshness --phases all",
        "settings": {"ingest_nice": 5},
        "phases": {
            "queries_idle": {"p50_ms": 70.1, "qps": 110.0, "loadavg_1m": 1.2},
            "1/s": {"lag_p99_s": 0.9, "edits_sent": 60, "loadavg_1m": 1.9},
            "cpu_hog": {"lag_p99_s": 1.7, "edits_sent": 60, "brand_new_key": True},
            "startup": {
                "idle": {"ready_after_start_s": 9.5},
                "cpu_hog": {"ready_after_start_s": 14},
            },
            "shutdown": {"exit_s": 3.2, "killed": 0, "samples": [1.0, 2.0]},
        },
        "machine": {"cpus": 2, "loadavg": [1.5, 1.2, 1.0]},
    }
    (tmp_path / "freshness.json").write_text(json.dumps(result))
    (tmp_path / "broken.json").write_text('{"phases": ')
    text = hooks.bench_markdown("freshness", results=tmp_path)
    for expected in (
        ".venv/bin/python -m bench.freshness --phases all",
        "1.5 / 1.2 / 1",
        "queries_idle",
        "cpu_hog",
        "brand_new_key",
        "phases.startup",
        "ready_after_start_s",
        "exit_s",
        "ingest_nice",
    ):
        assert expected in text, expected
    assert "could not be read" in hooks.bench_markdown("broken", results=tmp_path)
    assert "does not exist" in hooks.bench_markdown("absent", results=tmp_path)
    rest = hooks.bench_rest_markdown(exclude={"freshness"}, results=tmp_path)
    assert "## broken" in rest and "## freshness" not in rest


def test_every_results_file_renders() -> None:
    hooks = _hooks()
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        text = hooks.bench_markdown(path.stem)
        assert "|" in text or "could not be read" in text, path.name


def test_readme_is_short_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = readme.count("\n") + (not readme.endswith("\n"))
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).is_file(), f"README links to a missing file: {target}"


def test_readme_tune_table_is_the_one_its_json_makes() -> None:
    """The README's `freshrag tune` table is generated (`python -m bench._tune_table`),
    never typed: a re-run benchmark without a regenerated table fails here."""
    from bench import _tune_table

    readme = (ROOT / "README.md").read_text()
    data = json.loads(_tune_table.RESULTS.read_text())
    assert _tune_table.readme_block(readme) == _tune_table.block(data)
