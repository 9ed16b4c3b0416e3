"""Prometheus metrics of one gateway app (its own registry, so tests can run several)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["GatewayMetrics"]


@dataclass
class GatewayMetrics:
    """Request counts and latency per route template, bytes served, token refusals."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
