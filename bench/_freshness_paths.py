"""bench.freshness's `publish_paths` phase: is a document published with `POST /documents`
searchable as fast as one published through Kafka (issue 26)? Both paths in one phase,
edit by edit, so they share the worker, the broker and the machine's load."""

from __future__ import annotations

import random
import time

import httpx

from bench._freshness_lag import LagClock, drain, one_line_edit, summary
from bench.harness import loadavg, pct
from ingest.events import DocumentEvent
from ingest.publisher import Publisher


class HttpPublisher:
    """`POST /documents` with a key that has the publish right: the same event as the Kafka
    path sends (its record value, in the event contract), answered once the broker acked."""

    def __init__(self, url: str, key: str) -> None:
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=60,
        )

    def publish(self, events: list[DocumentEvent], progress: bool = False) -> int:
        one = len(events) == 1  # an event alone is an object, as the how-to sends it
        body = (
            events[0].to_bytes() if one else b"[" + b",".join(e.to_bytes() for e in events) + b"]"
        )
        self._http.post("/documents", content=body).raise_for_status()
        return len(events)

    def close(self) -> None:
        self._http.close()


# HTTP's lag (p50 and p99) may exceed Kafka's by 20 %, or by 50 ms when that is more. What
# HTTP adds is one local request before the same acks (a few ms); the lag is set by a worker
# that polls every 100 ms and embeds, so at a p50 near 0.2 s a ratio alone would trip on
# the sampling noise of a hundred-odd edits, not on the path.
PATHS_RATIO, PATHS_SLACK_S = 1.2, 0.05


def publish_paths(
    kafka: Publisher,
    http: HttpPublisher,
    pages: list[DocumentEvent],
    clock: LagClock,
    *,
    rate: float,
    seconds: float,
) -> dict:
    """One-line edits at `rate`/s per path, the paths alternating edit by edit (and which
    goes first, pair by pair), so they share every condition; random pages, none with an
    edit of either path still waiting. The lag and the publish call's time per path."""
    load_before = loadavg()[0]
    paths: dict[str, Publisher | HttpPublisher] = {"kafka": kafka, "http": http}
    names = list(paths)
    sent: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    call_ms: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(11)
    n, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        pair, turn = divmod(n, len(names))
        name = (names if pair % 2 == 0 else names[::-1])[turn]
        busy = {doc_id for doc_id, _ in clock.waiting()}
        page = rng.choice([p for p in pages if p.doc_id not in busy] or pages)
        edit, now = one_line_edit(page)
        clock.published(page.doc_id, edit.version, now)
        t = time.perf_counter()
        paths[name].publish([edit], progress=False)
        call_ms[name].append((time.perf_counter() - t) * 1000)
        sent[name].append((page.doc_id, edit.version))
        n += 1
        time.sleep(max(0.0, n / (rate * len(names)) - (time.monotonic() - started)))
    waiting = clock.waiting()
    drain_s = drain(clock)
    lags = clock.take_by_edit()
    load = round(max(load_before, loadavg()[0]), 2)
    rows = {}
    for name in names:
        mine = [lags[e] for e in sent[name] if e in lags]
        rows[name] = {
            "rate_per_s": rate,
            "seconds": seconds,
            "edits_sent": len(sent[name]),
            **summary(mine),
            "backlog_at_end": len(waiting & set(sent[name])),
            "drain_s": drain_s,
            "publish_call_p50_ms": round(pct(call_ms[name], 50), 1),
            "publish_call_p99_ms": round(pct(call_ms[name], 99), 1),
            "loadavg_1m": load,
        }
    via_kafka, via_http = rows["kafka"], rows["http"]
    for p in ("p50", "p99"):
        k = via_kafka[f"lag_{p}_s"]
        via_http[f"lag_{p}_vs_kafka"] = round(via_http[f"lag_{p}_s"] / k, 2) if k else None
        via_http[f"limit_{p}_s"] = round(max(PATHS_RATIO * k, k + PATHS_SLACK_S), 3)
    via_http["meets_target"] = all(
        via_http[f"lag_{p}_s"] <= via_http[f"limit_{p}_s"] for p in ("p50", "p99")
    )
    return rows
