//! Prometheus metrics of a consumer worker.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

pub struct Metrics {
    registry: Registry,
    pub records_consumed: Counter,
    pub rows_written: Counter,
    pub rows_replayed: Counter,
    pub dead_letters: Counter,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    pub write_failures: Counter,
    pub lag: Family<PartitionLabel, Gauge>,
    pub assigned_partitions: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("consumer");
        let metrics = Metrics {
            records_consumed: Counter::default(),
            rows_written: Counter::default(),
            rows_replayed: Counter::default(),
            dead_letters: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            write_failures: Counter::default(),
            lag: Family::default(),
            assigned_partitions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_consumed",
            "Records read from Kafka",
            metrics.records_consumed.clone(),
        );
        registry.register(
            "rows_written",
            "Rows inserted into PostgreSQL",
            metrics.rows_written.clone(),
        );
        registry.register(
            "rows_replayed",
            "Rows skipped because they were already stored (replayed batches)",
            metrics.rows_replayed.clone(),
        );
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "batch_size",
            "Records per batch",
            metrics.batch_size.clone(),
        );
        registry.register(
            "batch_seconds",
            "Time to store a batch and commit its offsets",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "write_failures",
            "Failed batch writes (each retried)",
            metrics.write_failures.clone(),
        );
        registry.register(
            "lag",
            "Records behind the end of each assigned partition",
            metrics.lag.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Partitions assigned to this worker",
            metrics.assigned_partitions.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
