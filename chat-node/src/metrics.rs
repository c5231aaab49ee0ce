//! Prometheus metrics of one chat node.
//!
//! Each node owns its registry (rather than a process-global recorder) so
//! that several nodes can run in one process, as the cluster tests do.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Open WebSocket sessions.
    pub connections: Gauge,
    /// Rooms with at least one member on this node.
    pub rooms: Gauge,
    /// Messages accepted from senders on this node.
    pub messages_received: Counter,
    /// Message frames queued to clients on this node.
    pub messages_delivered: Counter,
    /// Time from a send frame arriving to its ack being queued.
    pub send_ack_seconds: Histogram,
    /// Sends and frames refused, by reason (error code).
    pub rejected: Family<ReasonLabel, Counter>,
    /// Clients cut off because they did not read (close 4002).
    pub slow_client_disconnects: Counter,
    /// Connections refused at authentication (close 4001).
    pub auth_failures: Counter,
    /// Time for Kafka to acknowledge a message record.
    pub kafka_produce_seconds: Histogram,
    /// Time for Redis to accept a fanout publish.
    pub redis_publish_seconds: Histogram,
    /// Fanout events received from other nodes.
    pub fanout_in: Counter,
    /// Fanout events published to other nodes.
    pub fanout_out: Counter,
    /// Backend failures by kind (redis_seq, kafka_produce, redis_publish, ...).
    pub backend_errors: Family<KindLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chat");
        let connections = Gauge::default();
        let rooms = Gauge::default();
        let messages_received = Counter::default();
        let messages_delivered = Counter::default();
        // 100 µs .. ~3.3 s
        let send_ack_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let rejected = Family::<ReasonLabel, Counter>::default();
        let slow_client_disconnects = Counter::default();
        let auth_failures = Counter::default();
        let kafka_produce_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let redis_publish_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let fanout_in = Counter::default();
        let fanout_out = Counter::default();
        let backend_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "kafka_produce_seconds",
            "Time for Kafka to acknowledge a message record",
            kafka_produce_seconds.clone(),
        );
        registry.register(
            "redis_publish_seconds",
            "Time for Redis to accept a fanout publish",
            redis_publish_seconds.clone(),
        );
        registry.register(
            "fanout_in",
            "Fanout events received from other nodes",
            fanout_in.clone(),
        );
        registry.register(
            "fanout_out",
            "Fanout events published to other nodes",
            fanout_out.clone(),
        );
        registry.register(
            "backend_errors",
            "Backend failures by kind",
            backend_errors.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket sessions",
            connections.clone(),
        );
        registry.register("rooms", "Rooms with members on this node", rooms.clone());
        registry.register(
            "messages_received",
            "Messages accepted from senders on this node",
            messages_received.clone(),
        );
        registry.register(
            "messages_delivered",
            "Message frames queued to clients on this node",
            messages_delivered.clone(),
        );
        registry.register(
            "send_ack_seconds",
            "Time from a send frame arriving to its ack being queued",
            send_ack_seconds.clone(),
        );
        registry.register("rejected", "Frames refused, by reason", rejected.clone());
        registry.register(
            "slow_client_disconnects",
            "Clients disconnected because their outbound queue was full",
            slow_client_disconnects.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused at authentication",
            auth_failures.clone(),
        );
        Metrics {
            registry,
            connections,
            rooms,
            messages_received,
            messages_delivered,
            send_ack_seconds,
            rejected,
            slow_client_disconnects,
            auth_failures,
            kafka_produce_seconds,
            redis_publish_seconds,
            fanout_in,
            fanout_out,
            backend_errors,
        }
    }

    pub fn backend_error(&self, kind: &'static str) {
        self.backend_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics.connections.inc();
        metrics.reject("rate_limited");
        metrics.send_ack_seconds.observe(0.002);
        let text = metrics.render();
        assert!(text.contains("chat_connections 1"), "{text}");
        assert!(
            text.contains(r#"chat_rejected_total{reason="rate_limited"} 1"#),
            "{text}"
        );
        assert!(text.contains("chat_send_ack_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
