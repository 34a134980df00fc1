"""docker-compose.yml follows the Compose specification, and the CI workflow that runs the
suite against real servers follows GitHub's workflow schema and starts the same images.

No Docker here: the schemas are the copies check-jsonschema vendors (`vendor.compose-spec`,
`vendor.github-workflows`), so a key Compose would refuse fails the suite before a deploy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "servers.yml"


def check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_file_follows_the_compose_specification() -> None:
    run = check("vendor.compose-spec", COMPOSE)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_check_refuses_what_compose_would(tmp_path: Path) -> None:
    """The schema is strict where Compose is: an unknown service key, a mistyped value."""
    text = COMPOSE.read_text()
    anchor = "    stop_grace_period: 60s"
    assert anchor in text
    for bad, named in (
        ("    restart_policy: always\n", "restart_policy"),
        ("    scale: [3]\n", "scale"),
    ):
        path = tmp_path / "docker-compose.yml"
        path.write_text(text.replace(anchor, bad + anchor, 1))
        run = check("vendor.compose-spec", path)
        assert run.returncode == 1 and named in run.stdout, run.stdout + run.stderr


def test_the_servers_workflow_follows_the_github_workflow_schema() -> None:
    run = check("vendor.github-workflows", WORKFLOW)
    assert run.returncode == 0, run.stdout + run.stderr


def test_ci_tests_against_the_images_compose_deploys() -> None:
    deployed = yaml.safe_load(COMPOSE.read_text())["services"]
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["servers"]
    for name in ("qdrant", "kafka"):
        assert job["services"][name]["image"] == deployed[name]["image"], name
    env = job["env"]
    assert env["FRESHRAG_TEST_QDRANT_URL"].endswith(":6333")
    assert env["FRESHRAG_TEST_KAFKA_BOOTSTRAP"].endswith(":9092")
