"""The `freshrag` client commands against the real Tansu broker: events really arrive on the
topic; and a broker or API that is not there is one line and a non-zero exit, fast. The
prompt commands on a copy of the templates: production moves only on a passing report."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from freshrag.cli import cli
from freshrag.settings import Settings
from tests.conftest import free_port, read_topic


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "FRESHRAG_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "FRESHRAG_TOPIC": settings.topic,
        "FRESHRAG_DATA_DIR": str(settings.data_dir),
        **extra,
    }


def _events(settings: Settings, expected: int) -> list[dict]:
    """The topic's events, oldest first per document (the key picks the partition, so order
    holds within a document, not across documents)."""
    events = [json.loads(r.value) for r in read_topic(settings, settings.topic, expected)]
    return sorted(events, key=lambda e: (e["doc_id"], e["version"]))


@pytest.mark.broker
def test_publish_files_and_delete_by_id_or_by_a_gone_file(settings: Settings, tmp_path: Path):
    runner = CliRunner()
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha")
    (docs / "b.pdf").write_bytes(b"%PDF-1.4 tiny")
    env = _env(settings)

    r = runner.invoke(cli, ["publish", str(docs), "--prefix", "n/", "--acl", "eng"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli, ["publish", "--delete", "--doc-id", "old/1", "--doc-id", "old/2"], env=env
    )
    assert r.exit_code == 0, r.output
    assert "sent 2 event(s)" in r.output
    r = runner.invoke(cli, ["publish", "--delete", str(tmp_path / "gone.md")], env=env)
    assert r.exit_code == 0, r.output  # the file no longer exists: its id is its name

    events = _events(settings, 5)
    got = [(e["op"], e["doc_id"]) for e in events]
    assert got == [
        ("delete", "gone.md"),
        ("upsert", "n/a.md"),
        ("upsert", "n/b.pdf"),
        ("delete", "old/1"),
        ("delete", "old/2"),
    ]
    assert events[1]["content"] == "# A\n\nalpha" and events[1]["acl"] == ["eng"]
    assert events[2]["content_base64"] and "content" not in events[2]

    r = runner.invoke(cli, ["publish", "--doc-id", "x"], env=env)
    assert r.exit_code == 2 and "--delete" in r.output
    r = runner.invoke(cli, ["publish", str(tmp_path / "missing.md")], env=env)
    assert r.exit_code == 2


@pytest.mark.broker
def test_sync_publishes_changes_only_and_deletes_vanished_files(settings: Settings, tmp_path: Path):
    runner = CliRunner()
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\none")
    (docs / "b.md").write_text("# B\n\ntwo")
    env = _env(settings)

    r = runner.invoke(cli, ["sync", str(docs), "--prefix", "kb/", "--tenant", "acme"], env=env)
    assert r.exit_code == 0, r.output
    assert "2 new or changed, 0 deleted, 0 unchanged" in r.output
    r = runner.invoke(cli, ["sync", str(docs), "--prefix", "kb/", "--tenant", "acme"], env=env)
    assert "0 new or changed, 0 deleted, 2 unchanged" in r.output

    (docs / "a.md").write_text("# A\n\none, edited")
    (docs / "b.md").unlink()
    r = runner.invoke(cli, ["sync", str(docs), "--prefix", "kb/", "--tenant", "acme"], env=env)
    assert r.exit_code == 0 and "1 new or changed, 1 deleted, 0 unchanged" in r.output

    events = _events(settings, 4)
    assert [(e["op"], e["doc_id"], e.get("content")) for e in events] == [
        ("upsert", "kb/a.md", "# A\n\none"),
        ("upsert", "kb/a.md", "# A\n\none, edited"),
        ("upsert", "kb/b.md", "# B\n\ntwo"),
        ("delete", "kb/b.md", None),
    ]
    assert all(e["tenant"] == "acme" for e in events)
    assert list((settings.data_dir / "sync").glob("kb-*.json"))


@pytest.mark.broker
def test_sync_watch_picks_up_a_new_file(settings: Settings, tmp_path: Path):
    """--watch keeps polling; here the loop is ended by the test's SIGINT stand-in."""
    import threading

    import freshrag.cli.publishing as cli_module  # where sync lives

    docs = tmp_path / "w"
    docs.mkdir()
    (docs / "first.md").write_text("# first")
    stop = threading.Event()
    original = cli_module._stop_on_signals
    cli_module._stop_on_signals = lambda quiet=False: stop  # no real signal handlers in tests
    try:
        runner = CliRunner()
        result: dict = {}

        def run() -> None:
            result["r"] = runner.invoke(
                cli, ["sync", str(docs), "--watch", "--interval", "0.2"], env=_env(settings)
            )

        t = threading.Thread(target=run)
        t.start()
        assert len(_events(settings, 1)) == 1
        (docs / "second.md").write_text("# second")
        events = _events(settings, 2)
        stop.set()
        t.join(30)
    finally:
        cli_module._stop_on_signals = original
    assert [e["doc_id"] for e in events] == ["first.md", "second.md"]
    assert result["r"].exit_code == 0, result["r"].output


@pytest.mark.unit
@pytest.mark.parametrize(
    "args",
    [
        ["publish", "--delete", "--doc-id", "x"],
        ["sync", "{tmp}"],
    ],
)
def test_an_unreachable_broker_is_one_line_and_exit_3_within_seconds(
    tmp_path: Path, args: list[str]
):
    env = {
        "FRESHRAG_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "FRESHRAG_DATA_DIR": str(tmp_path / "data"),
    }
    started = time.monotonic()
    r = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args], env=env)
    assert time.monotonic() - started < 10
    assert r.exit_code == 3, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the Kafka broker" in lines[0], r.output
    assert not list((tmp_path / "data").rglob("*.json")), "no manifest without a confirmed send"


@pytest.mark.unit
def test_eval_against_no_service_is_one_line_and_exit_3(tmp_path: Path):
    started = time.monotonic()
    r = CliRunner().invoke(
        cli,
        ["eval", "--url", f"http://127.0.0.1:{free_port()}", "--api-key", "k"],
        env={"FRESHRAG_DATA_DIR": str(tmp_path / "data")},
    )
    assert time.monotonic() - started < 10
    assert r.exit_code == 3, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the service" in lines[0], r.output


# --- prompts: a candidate moves to production only on a passing evaluation -----------------


def _templates(tmp_path: Path) -> Path:
    """A copy of the packaged prompt templates (v1 production, v2 canary), v1 with a comment."""
    import shutil

    from retrieval.answer.prompts import TEMPLATES

    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    v1 = folder / "grounded-answer-v1.toml"
    v1.write_text("# kept as written\n" + v1.read_text())
    return folder


def _eval_report(tmp_path: Path, verdict: str, reason: str) -> Path:
    path = tmp_path / "eval" / "report.json"
    path.parent.mkdir(parents=True)
    comparison = {
        "selection": "grounded-answer@canary",
        "name": "grounded-answer",
        "candidate": "grounded-answer@2",
        "production": "grounded-answer@1",
        "verdict": verdict,
        "reason": reason,
    }
    path.write_text(json.dumps({"run_id": "r7", "prompt_comparison": comparison}))
    return path


@pytest.mark.unit
def test_promote_moves_production_to_a_candidate_that_did_not_regress(tmp_path: Path):
    from retrieval.answer.prompts import PromptRegistry

    folder = _templates(tmp_path)
    v1_before = (folder / "grounded-answer-v1.toml").read_text()
    report = _eval_report(
        tmp_path, "pass", "no regression against production (1 answer checks passed)"
    )
    args = ["prompts", "promote", "grounded-answer", "--report", str(report.parent)]
    r = CliRunner().invoke(cli, [*args, "--templates", str(folder)])
    assert r.exit_code == 0, r.output
    assert "production: grounded-answer@1 -> grounded-answer@2 (run r7" in r.output
    reg = PromptRegistry.load(folder)
    assert reg.resolve().ref == "grounded-answer@2"  # what the service serves from its next start
    assert reg.resolve(label="canary").ref == "grounded-answer@2"  # other labels stay
    assert reg.resolve(version=1).labels == ()
    # Only the labels line changed; nothing else left behind in the folder.
    v1_after = (folder / "grounded-answer-v1.toml").read_text()
    assert v1_after == v1_before.replace('labels = ["production"]', "labels = []")
    assert v1_after.startswith("# kept as written\n")
    assert sorted(f.name for f in folder.iterdir()) == [
        "grounded-answer-v1.toml",
        "grounded-answer-v2.toml",
    ]
    r = CliRunner().invoke(cli, [*args, "--templates", str(folder)])
    assert r.exit_code == 0 and "already production: nothing changed" in r.output

    r = CliRunner().invoke(cli, ["prompts", "list", "--templates", str(folder)])
    assert r.exit_code == 0
    assert re.search(r"grounded-answer@2\s+canary,production", r.output), r.output


@pytest.mark.unit
def test_promote_refuses_a_regression_and_leaves_the_files_alone(tmp_path: Path):
    folder = _templates(tmp_path)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    report = _eval_report(
        tmp_path, "regression", "regresses against production on answers.answer_cites_gold"
    )
    r = CliRunner().invoke(
        cli,
        [
            "prompts",
            "promote",
            "grounded-answer",
            "--report",
            str(report),
            "--templates",
            str(folder),
        ],
    )
    assert r.exit_code == 1, r.output
    assert (
        "grounded-answer@2 is not promoted: in run r7 it regresses against production on "
        "answers.answer_cites_gold"
    ) in r.output
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


@pytest.mark.unit
def test_promote_refuses_a_report_on_an_older_production(tmp_path: Path):
    folder = _templates(tmp_path)
    v3 = (folder / "grounded-answer-v2.toml").read_text()
    v3 = v3.replace("version = 2", "version = 3").replace(
        'labels = ["canary"]', 'labels = ["production"]'
    )
    (folder / "grounded-answer-v3.toml").write_text(v3)
    report = _eval_report(tmp_path, "pass", "no regression against production")
    args = ["prompts", "promote", "grounded-answer", "--report", str(report)]
    r = CliRunner().invoke(cli, [*args, "--templates", str(folder)])
    assert r.exit_code == 1, r.output
    assert "production is now grounded-answer@3" in r.output and "evaluate it again" in r.output


@pytest.mark.unit
def test_unknown_prompts_and_reports_are_usage_errors(tmp_path: Path):
    folder = _templates(tmp_path)
    report = _eval_report(tmp_path, "pass", "ok")
    r = CliRunner().invoke(
        cli, ["prompts", "promote", "nope", "--report", str(report), "--templates", str(folder)]
    )
    assert r.exit_code == 2 and "unknown prompt 'nope'; known: grounded-answer" in r.output
    (tmp_path / "junk.json").write_text("[1, 2]")
    r = CliRunner().invoke(
        cli,
        [
            "prompts",
            "promote",
            "grounded-answer",
            "--report",
            str(tmp_path / "junk.json"),
            "--templates",
            str(folder),
        ],
    )
    assert r.exit_code == 2 and "is not a `freshrag eval` report.json" in r.output
    env = {"FRESHRAG_DATA_DIR": str(tmp_path / "data")}
    r = CliRunner().invoke(cli, ["eval", "--api-key", "k", "--prompt", "grounded-answer"], env=env)
    assert r.exit_code == 2 and "not NAME@LABEL or NAME@VERSION" in r.output, r.output
    r = CliRunner().invoke(
        cli,
        ["eval", "--api-key", "k", "--prompt", "grounded-answer@canary", "--no-answers"],
        env=env,
    )
    assert r.exit_code == 2 and "cannot go with --no-answers" in r.output, r.output


@pytest.mark.unit
@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"frk_abcdef": {"tenant": "acme", "limits": {"tokens_per_day": -10}}}, "tokens_per_day"),
        ({"frk_abcdef": {"tenant": "acme", "limits": {"requests_per_second": "fast"}}}, "> 0"),
        (["not", "a", "map"], "JSON object"),
    ],
)
def test_a_bad_budget_in_the_keys_file_stops_serve_with_a_clear_message(
    tmp_path: Path, keys: object, fragment: str
):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(keys))
    env = {"FRESHRAG_DATA_DIR": str(tmp_path / "data"), "FRESHRAG_API_KEYS_FILE": str(keys_file)}
    r = CliRunner().invoke(cli, ["serve"], env=env)
    assert r.exit_code == 1, r.output
    assert f"bad API keys in {keys_file}" in r.output and fragment in r.output
    assert "frk_abcdef" not in r.output and "Traceback" not in r.output
