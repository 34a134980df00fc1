"""Release replay: index one release's docs, publish the next release's as updates, and count
what changed against what was re-embedded (read from the service's own metrics)."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from evals.client import ServiceClient
from evals.progress import bar
from ingest.events import DocumentEvent
from ingest.publisher import build_events

_CHUNK_KINDS = ("embedded", "new", "kept", "removed")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.txt"))
        if not {"_ext", "_theme"} & set(p.relative_to(root).parts)
    }


def _chunk_counters(client: ServiceClient) -> dict[str, float]:
    m = client.metrics()
    return {k: m.get(f'freshrag_ingest_chunks_total{{kind="{k}"}}', 0.0) for k in _CHUNK_KINDS}


def _wait(
    client: ServiceClient, want: dict[str, int | None], timeout_s: float, desc: str, progress: bool
) -> int:
    """Until each doc is at its wanted version (None: deleted/unknown); returns how many never got there."""
    pending = dict(want)
    deadline = time.monotonic() + timeout_s
    with bar(total=len(want), progress=progress, desc=desc, unit="doc") as shown:
        while pending and time.monotonic() < deadline:
            for d, v in list(pending.items()):
                current = client.indexed_version(d, fresh=True)
                if current == v or (v is not None and current is not None and current >= v):
                    del pending[d]
                    shown.update(1)
            if pending:
                time.sleep(0.5)
    return len(pending)


def run_replay(
    client: ServiceClient,
    old_docs: Path,
    new_docs: Path,
    label: str,
    mime: str = "text/x-rst",
    timeout_s: float = 3600.0,
    tenant: str = "default",
    acl: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    prefix = f"replay/{secrets.token_hex(3)}/"
    old, new = _files(old_docs), _files(new_docs)
    digest = {k: hashlib.sha256(v).hexdigest() for k, v in old.items()}
    changed = sorted(k for k in new if k in old and hashlib.sha256(new[k]).hexdigest() != digest[k])
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))

    def upserts(root: Path, names: list[str], version: int) -> list[DocumentEvent]:
        return build_events(
            [root / n for n in names],
            root=root,
            mime=mime,
            prefix=prefix,
            version=version,
            tenant=tenant,
            acl=acl,
        )

    client.publish(upserts(old_docs, sorted(old), 1))
    _wait(
        client,
        {prefix + n: 1 for n in old},
        timeout_s,
        f"replay: index {label.split('->')[0]}",
        progress,
    )
    before = _chunk_counters(client)
    started = time.monotonic()
    client.publish(
        upserts(new_docs, sorted(new), 2)
        + [
            DocumentEvent(
                op="delete", doc_id=prefix + n, version=2, tenant=tenant, acl=acl or ["public"]
            )
            for n in removed
        ]
    )
    want = {prefix + n: 2 for n in new} | {prefix + n: None for n in removed}
    missed = _wait(client, want, timeout_s, f"replay: update to {label.split('->')[-1]}", progress)
    seconds = time.monotonic() - started
    after = _chunk_counters(client)
    delta = {k: int(after[k] - before[k]) for k in _CHUNK_KINDS}
    total = 0
    for n in new:
        r = client.http.get(f"/documents/{prefix}{n}")
        total += r.json()["chunk_count"] if r.status_code == 200 else 0
    client.publish(
        [
            DocumentEvent(
                op="delete", doc_id=prefix + n, version=3, tenant=tenant, acl=acl or ["public"]
            )
            for n in set(old) | set(new)
        ]
    )
    return {
        "label": label,
        "docs_total": len(new),
        "docs_changed": len(changed),
        "docs_added": len(added),
        "docs_removed": len(removed),
        "chunks_total": total,
        "chunks_changed": delta["new"] + delta["removed"],
        "chunks_reembedded": delta["embedded"],
        "chunks_kept": delta["kept"],
        "reembedded_share": delta["embedded"] / total if total else 0.0,
        "update_seconds": round(seconds, 1),
        "docs_not_reflected": missed,
    }
