//! The `ChatCluster` custom resource (`chatclusters.realchat.dev/v1alpha1`).
//!
//! The CRD is generated from these types (`operator crd`), so field docs
//! become `kubectl explain` text, and validation lives in the schema the API
//! server enforces: ranges through schemars, cross-field and immutability
//! rules as CEL (`x-kubernetes-validations`).

// kube's derive takes one `printcolumn(...)` per column inside `#[kube]`;
// clippy reads the repeated `type_ = "string"` as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A RealChat chat cluster: autoscaled chat nodes behind a Service and an
/// optional Ingress, consumer workers persisting messages to PostgreSQL, and
/// the Kafka topic between them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "realchat.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    namespaced,
    shortname = "chat",
    category = "realchat",
    status = "ChatClusterStatus",
    scale(
        spec_replicas_path = ".spec.nodes.replicas",
        status_replicas_path = ".status.nodes.replicas",
        label_selector_path = ".status.nodes.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodes.summary"),
    printcolumn(
        name = "Consumers",
        type_ = "integer",
        json_path = ".status.consumers.readyReplicas"
    ),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topic.name"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterSpec {
    /// Container images of the chat nodes and consumer workers.
    pub images: Images,
    /// The chat nodes: WebSocket servers that users connect to.
    #[serde(default)]
    pub nodes: NodesSpec,
    /// The consumer workers that persist messages from Kafka to PostgreSQL.
    #[serde(default)]
    pub consumer: ConsumerSpec,
    /// Redis, for live fanout between nodes, presence and recent history.
    pub redis: RedisSpec,
    /// Kafka, through which every message is made durable.
    pub kafka: KafkaSpec,
    /// PostgreSQL, where messages are persisted and history is served from.
    pub postgres: PostgresSpec,
    /// Public access to the chat nodes through an Ingress.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// JWT authentication of users; without it the cluster runs in dev mode
    /// (users pick their own names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// What happens to the Kafka topic when the ChatCluster is deleted:
    /// `Retain` (default) leaves it and its data, `Delete` deletes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    /// Chat node image, e.g. `ghcr.io/realchat/chat-node:0.1.0`.
    #[schemars(length(min = 1))]
    pub chat_node: String,
    /// Consumer image, e.g. `ghcr.io/realchat/consumer:0.1.0`.
    #[schemars(length(min = 1))]
    pub consumer: String,
    /// Image pull policy for both images.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesSpec {
    /// Number of chat nodes (the scale subresource: `kubectl scale`).
    /// Ignored while autoscaling is enabled.
    #[serde(default = "default_node_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// CPU and memory of each chat node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Horizontal autoscaling of the chat nodes on CPU.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Seconds a stopping node spends draining its connections (they are
    /// closed with 1012 and reconnect to other nodes).
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: i32,
}

impl Default for NodesSpec {
    fn default() -> NodesSpec {
        NodesSpec {
            replicas: default_node_replicas(),
            resources: None,
            autoscaling: AutoscalingSpec::default(),
            drain_timeout_seconds: default_drain_timeout(),
        }
    }
}

fn default_node_replicas() -> i32 {
    2
}

fn default_drain_timeout() -> i32 {
    25
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Create a HorizontalPodAutoscaler for the chat nodes.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest chat nodes.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most chat nodes.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of requests) to aim for.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> AutoscalingSpec {
        AutoscalingSpec {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_cpu_target(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    10
}

fn default_cpu_target() -> i32 {
    70
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Number of consumer workers (at most one per topic partition does work).
    #[serde(default = "default_consumer_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Most messages written to PostgreSQL in one transaction.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: i32,
    /// CPU and memory of each worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ConsumerSpec {
    fn default() -> ConsumerSpec {
        ConsumerSpec {
            replicas: default_consumer_replicas(),
            batch_size: default_batch_size(),
            resources: None,
        }
    }
}

fn default_consumer_replicas() -> i32 {
    1
}

fn default_batch_size() -> i32 {
    1000
}

/// A key of a Secret in the ChatCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the Redis URL (`redis://…` or `rediss://…`).
    pub url_secret: SecretKeyRef,
    /// Prefix of this cluster's Redis keys and channels, so that clusters can
    /// share a Redis. Defaults to `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_prefix: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers, comma separated.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// Secret whose keys are extra librdkafka settings (SASL, TLS), e.g.
    /// `security.protocol`, `sasl.username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret: Option<String>,
    /// The message topic.
    #[serde(default)]
    pub topic: TopicSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("!has(oldSelf.name) || (has(self.name) && self.name == oldSelf.name)").message("kafka.topic.name is immutable"))]
pub struct TopicSpec {
    /// Topic name. Defaults to `realchat.<namespace>.<name>`; cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Partitions; may grow, never shrink (Kafka cannot remove partitions).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    /// Copies of each partition.
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: i32,
    /// How long messages stay in the topic, in hours (PostgreSQL keeps them
    /// for good).
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 1))]
    pub retention_hours: i64,
    /// Further topic configs, e.g. `min.insync.replicas: "2"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl Default for TopicSpec {
    fn default() -> TopicSpec {
        TopicSpec {
            name: None,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            retention_hours: default_retention_hours(),
            config: BTreeMap::new(),
        }
    }
}

fn default_partitions() -> i32 {
    12
}

fn default_replication() -> i32 {
    3
}

fn default_retention_hours() -> i64 {
    168
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// Secret key holding the PostgreSQL URL (`postgres://…`).
    pub url_secret: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("!self.enabled || has(self.host)").message("ingress.host is required when the ingress is enabled"))]
pub struct IngressSpec {
    /// Create an Ingress for the chat nodes.
    #[serde(default)]
    pub enabled: bool,
    /// IngressClass to use (the cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Public host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Secret with the TLS certificate for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations; they override the WebSocket-friendly defaults
    /// (long read/send timeouts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret key holding the HS256 secret or the RS256 public key (PEM).
    pub jwt_key_secret: SecretKeyRef,
    /// Which kind of key it is.
    #[serde(default)]
    pub algorithm: JwtAlgorithm,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with reasons.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub nodes: NodesStatus,
    #[serde(default)]
    pub consumers: ConsumersStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicStatus>,
    /// Where users connect (`wss://host/ws` with an Ingress, else the Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodesStatus {
    /// Chat node pods (the scale subresource's status).
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Label selector of the chat node pods (for the scale subresource).
    pub selector: String,
    /// `ready/desired`, for `kubectl get`.
    pub summary: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumersStatus {
    pub replicas: i32,
    pub ready_replicas: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    pub name: String,
    pub partitions: i32,
}
