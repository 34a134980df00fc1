"""An honest dev evaluation: unanswerable questions scored as refusals, and the Django FAQ
pages indexed without their question headings while the FAQ questions are asked.

Refusals: an unanswerable question (`answerable: false`) is answered well only by a
refusal; an answerable one should never be refused. `evals.metrics.refusal_scores` reads
both from the `/answer` rows.

Held-out FAQ: the FAQ questions are the FAQ's own headings, so on the normal index the
task is string matching. `heldout_faq_indexed` republishes the FAQ pages with those
headings replaced by neutral ones (`evals.dataset.strip_question_headings`), through
Kafka and under their usual doc ids (so the heading-bearing versions leave the index),
waits until they are searchable, and on exit publishes the originals again.

Versions: the rewrite is published at the indexed version + 1 and the restore at + 2,
because an event not newer than the indexed version is ignored. The sample's versions are
release-derived (5.2.8 → 50208): after each held-out run the FAQ pages sit 2 above their
release's version, so a later sample publish of a *patch* release (50209) would be
ignored for those pages. Use it on an evaluation deployment, or republish the FAQ pages
after an upgrade.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.client import ServiceClient
from evals.dataset import EvalItem, HeldoutFaq, build_heldout_faq
from ingest.events import DocumentEvent
from ingest.publisher import check_broker, file_event
from ingest.sample import sample_metadata

if TYPE_CHECKING:
    from evals.run import EvalConfig

log = logging.getLogger(__name__)

HELDOUT_VARIANT = "faq-heldout"  # metadata `variant` of a rewritten page, for anyone looking


class HeldoutNotIndexed(RuntimeError):
    """The rewritten FAQ pages did not become searchable in time: one line for the user."""


@dataclass
class HeldoutRun:
    """What `heldout_faq_indexed` did: the rewrite, the versions before it, what was skipped."""

    faq: HeldoutFaq
    before: dict[str, int] = field(default_factory=dict)  # doc_id → indexed version before
    skipped: list[str] = field(default_factory=list)  # FAQ pages not indexed: left alone

    @property
    def items(self) -> list[EvalItem]:
        """The held-out FAQ questions whose page was rewritten."""
        return [i for i in self.faq.items if set(i.gold_doc_ids) <= set(self.before)]


def _events(
    faq: HeldoutFaq,
    docs: Path,
    release: str,
    versions: dict[str, int],
    tenant: str,
    acl: list[str],
    stripped: bool,
) -> list[DocumentEvent]:
    """The rewritten (or original) pages as the sample publishes them: same id, metadata."""
    out = []
    for doc_id, version in versions.items():
        path, text = faq.pages[doc_id]
        meta: dict[str, str | int | float | bool] = dict(sample_metadata(path, docs, release))
        if stripped:
            meta["variant"] = HELDOUT_VARIANT
        out.append(
            file_event(
                path,
                doc_id,
                version=version,
                tenant=tenant,
                acl=acl,
                mime="text/x-rst",
                metadata=meta,
                data=text.encode() if stripped else None,
            )
        )
    return out


def _wait(client: ServiceClient, want: dict[str, int], timeout_s: float) -> list[str]:
    """Until each doc is searchable at its version (or newer); the ids that never got there."""
    deadline = time.monotonic() + timeout_s
    pending = dict(want)
    while pending and time.monotonic() < deadline:
        for doc_id, version in list(pending.items()):
            current = client.indexed_version(doc_id, fresh=True)
            if current is not None and current >= version:
                del pending[doc_id]
        if pending:
            time.sleep(0.5)
    return sorted(pending)


@contextmanager
def heldout_faq_indexed(
    client: ServiceClient,
    docs: Path,
    release: str,
    tenant: str = "default",
    acl: list[str] | None = None,
    timeout_s: float = 300.0,
    prefix: str = "django/",
) -> Iterator[HeldoutRun]:
    """The FAQ pages indexed without their question headings for the duration of the block.

    Only FAQ pages the service has indexed are rewritten (a page it does not have is
    reported in `skipped` and its questions left out). Raises ServiceUnreachable or
    BrokerUnreachable before changing anything; HeldoutNotIndexed if the rewrite is not
    searchable in time (the originals are restored either way).
    """
    acl = acl or ["public"]
    client.check_ready()
    check_broker(client.bootstrap)
    run = HeldoutRun(build_heldout_faq(docs, prefix))
    for doc_id in run.faq.pages:
        version = client.indexed_version(doc_id, fresh=True)
        if version is None:
            run.skipped.append(doc_id)
        else:
            run.before[doc_id] = version
    stripped = {d: v + 1 for d, v in run.before.items()}
    try:
        if stripped:
            client.publish(_events(run.faq, docs, release, stripped, tenant, acl, stripped=True))
            late = _wait(client, stripped, timeout_s)
            if late:
                raise HeldoutNotIndexed(
                    f"held-out FAQ pages not searchable within {timeout_s:.0f} s: {', '.join(late)}"
                )
        yield run
    finally:
        if stripped:
            restored = {d: v + 2 for d, v in run.before.items()}
            client.publish(_events(run.faq, docs, release, restored, tenant, acl, stripped=False))
            late = _wait(client, restored, min(timeout_s, 60.0))
            if late:
                log.warning("FAQ pages not yet restored (still queued): %s", ", ".join(late))


def run_eval_with_heldout_faq(
    cfg: EvalConfig, docs: Path, release: str, timeout_s: float = 300.0
) -> tuple[dict[str, Any], int]:
    """`freshrag eval --heldout-faq`: `cfg.dataset` plus the FAQ questions, scored while the
    FAQ pages are indexed without their question headings.

    The set actually asked (the dataset with its FAQ gold renamed, then the FAQ questions)
    is written next to the report as `DATASET+faq-heldout.jsonl`, the name the report shows.
    """
    from evals.dataset import load, save, with_heldout_faq
    from evals.run import run_eval

    client = ServiceClient(
        cfg.url, cfg.api_key, cfg.bootstrap, cfg.topic, generation=cfg.generation
    )
    try:
        with heldout_faq_indexed(client, docs, release, cfg.tenant, cfg.acl, timeout_s) as run:
            if run.skipped:
                log.warning("FAQ pages not indexed, their questions left out: %s", run.skipped)
            faq = HeldoutFaq(run.faq.pages, run.faq.renamed, run.items)
            items = with_heldout_faq(load(cfg.dataset, with_unanswerable=True), faq)
            combined = cfg.out_dir / f"{cfg.dataset.stem}+faq-heldout.jsonl"
            save(items, combined)
            cfg.dataset = combined
            return run_eval(cfg)
    finally:
        client.close()
