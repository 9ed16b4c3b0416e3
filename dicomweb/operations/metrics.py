"""Prometheus metrics of one gateway app (its own registry, so tests can run several).

With several worker processes (``compose/gateway_workers.py``) each process counts into
prometheus_client's multiprocess files under a directory the gateway made, and ``/metrics``
in any worker merges the files of all of them: the answer is the whole gateway's, whichever
worker serves it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROC_ENV", "GatewayMetrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client picks multiprocess mode from this variable when it is first imported,
so the gateway's main sets it and runs itself again before it forks the workers."""


@dataclass
class GatewayMetrics:
    """Request counts and latency per route template, bytes served, token refusals.

    Parameters
    ----------
    worker : int, optional
        This process's worker number when the gateway runs several; it then also counts
        its requests in ``vna_gateway_worker_requests{worker=...}``.
    multiprocess_dir : Path, optional
        prometheus_client's multiprocess directory (it must be the one named by
        ``PROMETHEUS_MULTIPROC_DIR`` at import); the exposition merges every process's
        files found there.
    """

    worker: int | None = None
    multiprocess_dir: Path | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._exposed = self.registry
        if self.multiprocess_dir is not None:
            if os.environ.get(MULTIPROC_ENV) != str(self.multiprocess_dir):
                # values would stay in this process and /metrics would show one worker
                raise RuntimeError(
                    f"{MULTIPROC_ENV} must name {self.multiprocess_dir} before "
                    "prometheus_client is imported (compose.gateway sets it)"
                )
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "vna_gateway_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vna_gateway_request_seconds",
            "Time to the end of the handler (streamed bodies included)",
            ["route"],
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "vna_gateway_dicom_bytes",
            "DICOM bytes sent by WADO-RS",
            registry=self.registry,
        )
        self.token_refusals = Counter(
            "vna_gateway_token_refusals",
            "Requests refused for a missing, invalid or insufficient token",
            ["status"],
            registry=self.registry,
        )
        self.worker_requests: Counter | None = None
        if self.worker is not None:
            # how evenly the workers share the connections (they accept on one socket)
            self.worker_requests = Counter(
                "vna_gateway_worker_requests",
                "HTTP requests served, by gateway worker process (numbered from 1)",
                ["worker"],
                registry=self.registry,
            )

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if self.worker_requests is not None:
            self.worker_requests.labels(str(self.worker)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self._exposed)
