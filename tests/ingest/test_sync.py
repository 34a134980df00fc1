"""Folder sync: the pure plan (manifest + folder → upserts and deletes), and the adapter with a
publisher that records or fails, so the manifest rule is checked without a broker."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from ingest.events import DocumentEvent
from ingest.publisher import BrokerUnreachable
from ingest.sync import Syncer, list_files, manifest_path, plan, read_manifest

pytestmark = pytest.mark.unit


def test_plan_sends_new_and_changed_and_deletes_what_vanished():
    manifest = {"a.md": "h1", "b.md": "h2", "gone.md": "h3", "big.pdf": "h4"}
    current = {"a.md": "h1", "b.md": "h2-new", "new.md": "h5"}
    p = plan(manifest, current, keep=frozenset({"big.pdf"}))
    assert p.upserts == ["b.md", "new.md"]
    assert p.deletes == ["gone.md"]  # big.pdf is still on disk, only not sent: kept
    assert p.unchanged == 1
    assert plan({}, {}).upserts == [] and plan({"x": "1"}, {}).deletes == ["x"]


class Recorder:
    topic = "documents"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[DocumentEvent]] = []
        self.fail = fail

    def publish(self, events: list[DocumentEvent], **_: object) -> int:
        if self.fail:
            raise BrokerUnreachable("broker down")
        self.batches.append(events)
        return len(events)


def _sent(pub: Recorder) -> list[tuple[str, str]]:
    return sorted((e.op, e.doc_id) for e in pub.batches[-1])


def test_syncer_publishes_only_changes_and_keeps_the_manifest_until_confirmed(tmp_path: Path):
    root = tmp_path / "docs"
    (root / "guide").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\nalpha")
    (root / "guide" / "b.rst").write_text("B\n=\n\nbeta")
    (root / "report.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / "script.py").write_text("print('not a document')")
    (root / ".hidden.md").write_text("# hidden")
    manifest = tmp_path / "m.json"
    pub = Recorder()
    syncer = Syncer(root, pub, manifest, prefix="kb/", tenant="acme", acl=["eng"])

    first = syncer.run_once()
    assert _sent(pub) == [
        ("upsert", "kb/a.md"),
        ("upsert", "kb/guide/b.rst"),
        ("upsert", "kb/report.pdf"),
    ]
    pdf = next(e for e in first.sent if e.doc_id == "kb/report.pdf")
    assert base64.b64decode(pdf.content_base64) == b"%PDF-1.4 not really"  # inline, no shared FS
    assert all(e.tenant == "acme" and e.acl == ["eng"] for e in first.sent)
    assert set(read_manifest(manifest)) == {"kb/a.md", "kb/guide/b.rst", "kb/report.pdf"}

    assert syncer.run_once().sent == [] and len(pub.batches) == 1  # nothing changed: nothing sent

    (root / "a.md").write_text("# A\n\nalpha, edited")
    (root / "guide" / "b.rst").unlink()
    (root / "c.txt").write_text("gamma")
    third = syncer.run_once()
    assert _sent(pub) == [
        ("delete", "kb/guide/b.rst"),
        ("upsert", "kb/a.md"),
        ("upsert", "kb/c.txt"),
    ]
    assert third.unchanged == 1
    assert len({e.version for e in third.sent}) == 1  # one version per pass

    # The broker does not confirm: nothing is recorded, the next pass sends it all again.
    (root / "a.md").write_text("# A\n\nalpha, edited twice")
    (root / "c.txt").unlink()
    before = manifest.read_text()
    with pytest.raises(BrokerUnreachable):
        Syncer(root, Recorder(fail=True), manifest, prefix="kb/", tenant="acme").run_once()
    assert manifest.read_text() == before
    syncer.run_once()
    assert _sent(pub) == [("delete", "kb/c.txt"), ("upsert", "kb/a.md")]


def test_touch_without_change_sends_nothing_and_a_corrupt_manifest_format_starts_over(
    tmp_path: Path,
):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.md").write_text("same")
    manifest = tmp_path / "m.json"
    pub = Recorder()
    Syncer(root, pub, manifest).run_once()
    (root / "a.md").write_text("same")  # new mtime, same bytes
    assert Syncer(root, pub, manifest).run_once().sent == []
    data = json.loads(manifest.read_text())
    data["format"] = 999
    manifest.write_text(json.dumps(data))
    assert [e.doc_id for e in Syncer(root, pub, manifest).run_once().sent] == ["a.md"]


def test_a_git_checkout_leaves_out_what_git_ignores(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "build").mkdir(parents=True)
    (root / "README.md").write_text("# readme")
    (root / "build" / "out.md").write_text("# generated")
    (root / ".gitignore").write_text("build/\n")
    try:
        subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert [p.relative_to(root).as_posix() for p in list_files(root)] == ["README.md"]


def test_manifest_path_is_per_folder_topic_tenant_and_prefix(tmp_path: Path):
    a = manifest_path(tmp_path, tmp_path / "docs", "documents", "default", "")
    assert a.parent == tmp_path / "sync" and a.name.startswith("docs-")
    assert a != manifest_path(tmp_path, tmp_path / "docs", "documents", "acme", "")
    assert a != manifest_path(tmp_path, tmp_path / "docs", "other-topic", "default", "")
    assert a != manifest_path(tmp_path, tmp_path / "docs", "documents", "default", "kb/")


def test_a_file_still_being_written_waits_for_a_later_pass(tmp_path: Path):
    """With a settle time, a file changed just now is neither sent nor deleted: a watcher
    would otherwise send it half-written and then again. Once it is older, it goes once."""
    import os
    import time

    root = tmp_path / "docs"
    root.mkdir()
    (root / "old.md").write_text("# Old\n\nsettled")
    past = time.time_ns() - 60 * 10**9
    os.utime(root / "old.md", ns=(past, past))
    pub = Recorder()
    syncer = Syncer(root, pub, tmp_path / "m.json", settle_s=30.0)
    syncer.run_once()
    assert _sent(pub) == [("upsert", "old.md")]

    (root / "old.md").write_text("# Old\n\nbeing rewrit")  # changed now: waits
    (root / "new.md").write_text("# New\n\nhalf")
    result = syncer.run_once()
    assert result.sent == [] and len(pub.batches) == 1
    assert read_manifest(tmp_path / "m.json")["old.md"].sha256  # kept, not deleted

    (root / "new.md").write_text("# New\n\nwhole")
    for name in ("old.md", "new.md"):
        os.utime(root / name, ns=(past, past))
    syncer.run_once()
    assert _sent(pub) == [("upsert", "new.md"), ("upsert", "old.md")]
    sent = {e.doc_id: e.content for e in pub.batches[-1]}
    assert sent == {"new.md": "# New\n\nwhole", "old.md": "# Old\n\nbeing rewrit"}
    assert syncer.run_once().sent == []
