"""The API's own Prometheus metrics; GET /metrics serves them with the rest of the registry.

Defined once per process (the registry refuses a second metric of the same name), however
many apps are created.
"""

from __future__ import annotations

from prometheus_client import Histogram

REQUEST_SECONDS = Histogram(
    "freshrag_api_request_seconds",
    "API latency",
    ["endpoint", "mode"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
