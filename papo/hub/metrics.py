"""The hub's Prometheus metrics, registered on the registry the node gives it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class HubMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.connections = Gauge(
            "papo_ws_connections", "Open WebSocket connections on this node.", registry=registry
        )
        self.connections_total = Counter(
            "papo_ws_connections_opened_total",
            "WebSocket connections accepted.",
            registry=registry,
        )
        self.frames_in = Counter(
            "papo_ws_frames_in_total",
            "Client frames received, by frame type.",
            ("type",),
            registry=registry,
        )
        self.frames_out = Counter(
            "papo_ws_frames_out_total",
            "Frames queued to clients, by kind (reply, error, or the event type).",
            ("type",),
            registry=registry,
        )
        self.errors = Counter(
            "papo_ws_errors_total",
            "Error replies sent, by error code.",
            ("code",),
            registry=registry,
        )
        self.closes = Counter(
            "papo_ws_closes_total",
            "Connections closed by papo, by close code.",
            ("code",),
            registry=registry,
        )
        self.slow_consumers = Counter(
            "papo_ws_slow_consumer_closes_total",
            "Connections closed because their outbox overflowed.",
            registry=registry,
        )
        self.outbox_drops = Counter(
            "papo_ws_outbox_dropped_total",
            "Queued frames discarded when a slow consumer was closed.",
            registry=registry,
        )
        self.fanout_seconds = Histogram(
            "papo_fanout_seconds",
            "Time to queue one event to every local recipient.",
            buckets=FANOUT_BUCKETS,
            registry=registry,
        )
        self.fanout_recipients = Counter(
            "papo_fanout_deliveries_total",
            "Events queued to local connections.",
            registry=registry,
        )
        self.history_batch = Histogram(
            "papo_history_write_batch_size",
            "Messages per durable history write.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.history_seconds = Histogram(
            "papo_history_write_seconds",
            "Time from a batch leaving the writer's line to being stored durably.",
            buckets=WRITE_BUCKETS,
            registry=registry,
        )
        self.history_staged = Gauge(
            "papo_history_staged",
            "Messages fanned out and not yet stored (one node numbers, fans out, then stores).",
            registry=registry,
        )
        self.history_errors = Counter(
            "papo_history_write_errors_total",
            "History writes that failed (their messages are written again).",
            registry=registry,
        )
        self.history_reads = Counter(
            "papo_history_reads_total",
            "History reads asked (joins, resumes, gap fills), by read: after, before, last_seq.",
            ("read",),
            registry=registry,
        )
        self.history_queries = Counter(
            "papo_history_queries_total",
            "Queries sent to the history store for those reads: concurrent reads share one.",
            ("read",),
            registry=registry,
        )
        self.messages = Counter(
            "papo_messages_stored_total",
            "Messages stored (acknowledged) by this node.",
            registry=registry,
        )
        self.broker_errors = Counter(
            "papo_broker_errors_total",
            "Broker operations that failed, by operation (publish, subscriber, ...).",
            ("op",),
            registry=registry,
        )
        self.broker_reconnects = Counter(
            "papo_broker_reconnects_total",
            "Times the broker's subscriber connection came back after a loss.",
            registry=registry,
        )
        self.broker_connected = Gauge(
            "papo_broker_connected",
            "1 while the node's broker subscriber is connected.",
            registry=registry,
        )
        self.gap_fills = Counter(
            "papo_fanout_gap_fills_total",
            "Messages this node read from history because they were late or lost in transit.",
            registry=registry,
        )
        self.duplicates_dropped = Counter(
            "papo_fanout_duplicates_dropped_total",
            "Messages that reached this node again (republished retries) and were dropped.",
            registry=registry,
        )
        self.membership_renewals = Counter(
            "papo_membership_renewals_total",
            "Memberships of talking members checked again behind their frames.",
            registry=registry,
        )
        self.membership_queries = Counter(
            "papo_membership_renewal_queries_total",
            "Queries those checks took: the checks falling due together share one.",
            registry=registry,
        )
        self.presence_expired = Counter(
            "papo_presence_expired_total",
            "Presence entries of vanished connections (crashed nodes) removed by expiry.",
            registry=registry,
        )
        self.presence_errors = Counter(
            "papo_presence_errors_total",
            "Presence updates that failed against the shared store (retried by refresh).",
            registry=registry,
        )
