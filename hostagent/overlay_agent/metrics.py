"""Prometheus metrics of the agent, on a registry of their own (one per agent process, or per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Docker start event -> host route installed; the product's target is p50 50 ms, p99 200 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.containers_wired = Gauge("overlay_containers_wired", "Containers with a veth and addresses", registry=r)
        self.containers_announced = Gauge(
            "overlay_containers_announced", "Wired containers whose host routes are installed", registry=r
        )
        self.routes_installed = Gauge(
            "overlay_routes_installed", "Host routes carrying the agent's protocol", ["family"], registry=r
        )
        self.errors = Counter(
            "overlay_container_errors", "Containers refused or failed, by reason", ["reason"], registry=r
        )
        self.wiring_latency = Histogram(
            "overlay_wiring_latency_seconds",
            "Docker start event to the container's host routes in the kernel",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.resync_seconds = Histogram(
            "overlay_resync_seconds",
            "Duration of a full resync",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.resyncs = Counter("overlay_resyncs", "Full resyncs, by result", ["result"], registry=r)
        self.netlink_changes = Counter(
            "overlay_netlink_changes", "Changes applied to the kernel, by kind", ["kind"], registry=r
        )
        self.docker_up = Gauge("overlay_docker_up", "1 while the Docker event stream is connected", registry=r)

    def serve(self, address: str) -> None:
        """Serve /metrics on host:port (a thread of prometheus_client)."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
