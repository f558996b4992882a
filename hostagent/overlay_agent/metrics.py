"""Every Prometheus metric of the agent, a class per part (wiring, document source, pairing sync), on one registry per process or test."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Docker start event -> host route installed; the product's target is p50 50 ms, p99 200 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
# One resync or apply: tens of milliseconds idle, seconds with FRR reloads or 1,000 containers.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class Metrics:
    """The container wiring's metrics (and the /metrics server, for the whole process's registry)."""

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
            buckets=DURATION_BUCKETS,
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


class SourceMetrics:
    """The document source's: the SSM parameter reads and the agent documents refused."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.parameters_ok = Gauge(
            "overlay_parameters_ok", "1 while the last read of the SSM parameters succeeded", registry=r
        )
        self.parameter_failures = Counter(
            "overlay_parameter_failures", "Failed reads of the SSM parameters", registry=r
        )
        self.parameter_fetches = Counter(
            "overlay_parameter_fetches", "Full reads of the parameter set (the revision moved)", registry=r
        )
        self.parameters_age = Gauge(
            "overlay_parameters_last_success_timestamp", "Unix time of the last successful parameter read", registry=r
        )
        self.agent_refused = Counter(
            "overlay_agent_document_refused", "Agent documents refused as invalid (the last good one stays)", registry=r
        )


class PairingMetrics:
    """The pairing sync's: tunnels, FRR reloads, the route-server gate, apply time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.tunnels = Gauge("overlay_tunnels", "Tunnels by state", ["state"], registry=r)
        self.tunnels_rejected = Gauge(
            "overlay_tunnel_parameters_rejected", "Tunnel parameters refused as malformed", registry=r
        )
        self.frr_reloads = Counter("overlay_frr_reloads", "frr-reload runs, by result", ["result"], registry=r)
        self.route_server_preferred = Gauge(
            "overlay_route_server_preferred",
            "1 while this router announces its planned route to the VPC route server (its hosts are back), "
            "0 while it announces the held one",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "overlay_pairing_apply_seconds",
            "Duration of one pairing apply",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
