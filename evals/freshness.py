"""Freshness probes: publish real change events and time until `/retrieve` reflects them.

Per probe document: add it (new fact), change the fact, delete it. Each step's lag runs
from the publish to the first `/retrieve` that shows the new state; a step not reflected
within the timeout is missed. After a delete is reflected, a few broad queries count how
often the deleted document still comes back (must be 0).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from evals.client import ServiceClient
from evals.metrics import freshness_metric, mean, percentile
from evals.progress import bar
from ingest.events import DocumentEvent


def _doc(i: int, token: str) -> str:
    return f"# Freshness probe {i}\n\nThe current probe fact is {token}, checked by the nightly evaluation."


def run_freshness(
    client: ServiceClient,
    probes: int = 10,
    timeout_s: float = 30.0,
    slo_s: float = 5.0,
    tenant: str = "default",
    acl: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    run = secrets.token_hex(4)
    ids = [f"eval-probe/{run}/{i}" for i in range(probes)]
    old = {d: "fq" + secrets.token_hex(5) for d in ids}
    new = {d: "fq" + secrets.token_hex(5) for d in ids}
    acl = acl or ["public"]
    stale = {"hits": 0, "stale": 0}

    def event(op: str, d: str, version: int, token: str | None = None) -> DocumentEvent:
        i = ids.index(d)
        return DocumentEvent(
            op=op,
            doc_id=d,
            version=version,
            tenant=tenant,
            acl=acl,
            mime="text/markdown",
            content=_doc(i, token) if token else None,
            title=f"probe {i}",
        )

    def hits_for(token: str, d: str) -> list[dict]:
        hits, _ = client.retrieve(token, "sparse", 5, {"doc_id": d})
        stale["hits"] += len(hits)
        stale["stale"] += client.count_stale(hits, fresh=True)
        return hits

    checks = {
        "add": lambda d: any(h["version"] == 1 for h in hits_for(old[d], d)),
        "change": lambda d: (
            any(h["version"] == 2 for h in hits_for(new[d], d)) and not hits_for(old[d], d)
        ),
        "delete": lambda d: not hits_for(new[d], d),
    }
    events = {
        "add": lambda d: event("upsert", d, 1, old[d]),
        "change": lambda d: event("upsert", d, 2, new[d]),
        "delete": lambda d: event("delete", d, 3),
    }
    lags: dict[str, dict[str, float | None]] = {}
    for op in ("add", "change", "delete"):
        sent = time.monotonic()
        client.publish([events[op](d) for d in ids])
        lags[op] = dict.fromkeys(ids)
        pending = set(ids)
        if op == "delete":  # a document never seen cannot prove its deletion: missed
            pending = {
                d for d in ids if lags["add"][d] is not None or lags["change"][d] is not None
            }
        with bar(
            total=len(pending), progress=progress, desc=f"freshness: {op}", unit="doc"
        ) as shown:
            while pending and time.monotonic() - sent < timeout_s:
                for d in sorted(pending):
                    if checks[op](d):
                        lags[op][d] = time.monotonic() - sent
                        pending.discard(d)
                        shown.update(1)
                if pending:
                    time.sleep(0.1)
    deleted = {d for d, lag in lags["delete"].items() if lag is not None}
    returned = 0
    for d in deleted:
        hits, _ = client.retrieve(f"probe fact {new[d]}", "hybrid", 10)
        returned += sum(h["doc_id"] in deleted for h in hits)

    metric = freshness_metric()
    samples = [
        {
            "op": op,
            "doc_id": d,
            "lag_s": lag,
            "freshness": metric.score(lag_s=lag, slo_s=slo_s).value,
        }
        for op in lags
        for d, lag in lags[op].items()
    ]
    all_lags = [s["lag_s"] for s in samples if s["lag_s"] is not None]
    return {
        "probes": probes,
        "slo_s": slo_s,
        "timeout_s": timeout_s,
        "freshness": mean([s["freshness"] for s in samples]),
        "lag_p50_s": percentile(all_lags, 50),
        "lag_p95_s": percentile(all_lags, 95),
        "lag_p99_s": percentile(all_lags, 99),
        "by_op": {
            op: {
                "p50_s": percentile([v for v in lags[op].values() if v is not None], 50),
                "missed": sum(v is None for v in lags[op].values()),
            }
            for op in lags
        },
        "missed": sum(s["lag_s"] is None for s in samples),
        "missed_rate": sum(s["lag_s"] is None for s in samples) / len(samples),
        "deleted_returned": returned,
        "stale_hit_rate": stale["stale"] / stale["hits"] if stale["hits"] else 0.0,
        "samples": samples,
    }
