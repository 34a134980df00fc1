"""`freshrag sync`: keep a folder (or a git checkout) in the index.

Each run compares the folder with a manifest of what the broker last confirmed (doc id →
content hash) and publishes only new and changed files, plus delete events for files
that disappeared. The manifest is written only after the broker confirmed every send, so
a run that fails is simply redone by the next one: nothing is lost, at worst a file is
sent twice (the worker then re-embeds nothing, its chunks are unchanged).

`plan` is the pure part (manifest + current hashes → upserts and deletes); `Syncer` is the
thin adapter that reads the folder, publishes and writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ingest.events import DocumentEvent
from ingest.parser import SUPPORTED_MIMES, normalize_mime
from ingest.publisher import Publisher, default_version, delete_events, file_event, guess_mime

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class FileState:
    """A file as last confirmed by the broker: its hash, and the stat that let us skip hashing."""

    sha256: str
    size: int = 0
    mtime_ns: int = 0
    version: int = 0


@dataclass(slots=True)
class SyncPlan:
    upserts: list[str] = field(default_factory=list)  # doc ids, new or changed
    deletes: list[str] = field(default_factory=list)  # doc ids whose file is gone
    unchanged: int = 0


def plan(
    manifest: Mapping[str, str], current: Mapping[str, str], keep: frozenset[str] = frozenset()
) -> SyncPlan:
    """What to publish, from doc id → sha256 of the manifest and of the folder now.

    `keep`: ids present on disk but not sent this time (too large, say); their manifest
    entry stays and they are neither re-sent nor deleted.
    """
    out = SyncPlan()
    for doc_id in sorted(current):
        if manifest.get(doc_id) == current[doc_id]:
            out.unchanged += 1
        else:
            out.upserts.append(doc_id)
    out.deletes = sorted(d for d in manifest if d not in current and d not in keep)
    return out


def manifest_path(data_dir: Path, root: Path, topic: str, tenant: str, prefix: str) -> Path:
    """One manifest per (folder, topic, tenant, prefix): each records what *that* target holds."""
    key = json.dumps([str(root.resolve()), topic, tenant, prefix])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.resolve().name) or "root"
    return data_dir / "sync" / f"{slug}-{digest}.json"


def read_manifest(path: Path) -> dict[str, FileState]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        return {}  # an unknown format: start over, which re-sends every file once
    return {d: FileState(**s) for d, s in data.get("files", {}).items()}


def write_manifest(path: Path, files: Mapping[str, FileState], **about: str) -> None:
    """Atomically: a crash mid-write leaves the previous manifest, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "format": MANIFEST_FORMAT,
        **about,
        "files": {d: asdict(s) for d, s in sorted(files.items())},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def list_files(root: Path) -> list[Path]:
    """The folder's files, hidden ones excluded; in a git checkout, what git does not ignore."""
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        files = [root / n for n in names]
    except (OSError, subprocess.SubprocessError):
        files = [f for f in root.rglob("*") if f.is_file()]
    return sorted(
        f
        for f in files
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )


def _sha256(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


@dataclass(slots=True)
class SyncResult:
    sent: list[DocumentEvent] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def upserts(self) -> list[DocumentEvent]:
        return [e for e in self.sent if e.op == "upsert"]

    @property
    def deletes(self) -> list[DocumentEvent]:
        return [e for e in self.sent if e.op == "delete"]


class Syncer:
    """One folder kept in the index through `publisher`; `run_once` is one pass."""

    def __init__(
        self,
        root: Path,
        publisher: Publisher,
        manifest: Path,
        *,
        tenant: str = "default",
        acl: list[str] | None = None,
        prefix: str = "",
        mime: str | None = None,
        max_bytes: int | None = None,
        settle_s: float = 0.0,
    ) -> None:
        self.root, self.publisher, self.manifest = root, publisher, manifest
        self.tenant, self.acl, self.prefix, self.mime = tenant, acl, prefix, mime
        self.max_bytes = max_bytes  # larger files are skipped (and kept, not deleted)
        # A file modified less than this long ago may still be being written: it waits for
        # a later pass (kept as it was), so a watcher never sends it half-done and again.
        self.settle_s = settle_s

    def _kind(self, f: Path) -> str:
        return normalize_mime(self.mime) if self.mime else guess_mime(f)

    def scan(
        self, previous: Mapping[str, FileState]
    ) -> tuple[dict[str, tuple[Path, FileState]], dict[str, str], set[str]]:
        """doc id → (file, state) for every file to keep in the index, the skipped ones,
        and the ones left for a later pass because they changed within `settle_s`.

        A file whose size and mtime match the manifest keeps its recorded hash unread.
        """
        current: dict[str, tuple[Path, FileState]] = {}
        skipped: dict[str, str] = {}
        settling: set[str] = set()
        fresh_after = time.time_ns() - int(self.settle_s * 1e9)
        for f in list_files(self.root):
            doc_id = self.prefix + f.relative_to(self.root).as_posix()
            if self._kind(f) not in SUPPORTED_MIMES:
                continue  # a checkout's code, images, ...: not documents
            st = f.stat()
            if self.max_bytes is not None and st.st_size > self.max_bytes:
                skipped[doc_id] = f"larger than {self.max_bytes} bytes"
                continue
            prev = previous.get(doc_id)
            if prev and (prev.size, prev.mtime_ns) == (st.st_size, st.st_mtime_ns):
                sha = prev.sha256
            elif self.settle_s and st.st_mtime_ns > fresh_after:
                settling.add(doc_id)
                continue
            else:
                sha, _ = _sha256(f)
            current[doc_id] = (f, FileState(sha, st.st_size, st.st_mtime_ns))
        return current, skipped, settling

    def run_once(self) -> SyncResult:
        previous = read_manifest(self.manifest)
        current, skipped, settling = self.scan(previous)
        todo = plan(
            {d: s.sha256 for d, s in previous.items()},
            {d: s.sha256 for d, (_, s) in current.items()},
            keep=frozenset(skipped) | settling,
        )
        version = default_version()
        events: list[DocumentEvent] = []
        # Unchanged files keep their version but take the new stat (a touch is then not re-hashed).
        confirmed = {d: previous[d] for d in (*skipped, *settling) if d in previous}
        changed = set(todo.upserts)
        for doc_id, (_, state) in current.items():
            if doc_id in previous and doc_id not in changed:
                confirmed[doc_id] = replace(state, version=previous[doc_id].version)
        for doc_id in todo.upserts:
            f, state = current[doc_id]
            sha, data = _sha256(f)  # hash exactly the bytes that are sent
            events.append(
                file_event(
                    f,
                    doc_id,
                    version=version,
                    tenant=self.tenant,
                    acl=self.acl,
                    mime=self.mime,
                    data=data,
                )
            )
            confirmed[doc_id] = FileState(sha, state.size, state.mtime_ns, version)
        events += delete_events(todo.deletes, tenant=self.tenant, version=version)
        if events:
            self.publisher.publish(events, desc=f"syncing {self.root}")
        if confirmed != previous or not self.manifest.exists():
            write_manifest(
                self.manifest,
                confirmed,
                root=str(self.root.resolve()),
                topic=self.publisher.topic,
                tenant=self.tenant,
                prefix=self.prefix,
            )
        return SyncResult(events, todo.unchanged, sorted(skipped.items()))
