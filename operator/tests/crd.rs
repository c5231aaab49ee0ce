//! The generated CRD and its validation rules, without an API server.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use operator::crd::{
    AutoscalingSpec, ChatCluster, DeletionPolicy, IngressSpec, PullPolicy, TopicSpec,
};
use serde_json::json;

#[test]
fn the_committed_crd_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/chatcluster.yaml");
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == operator::crd_yaml().unwrap(),
        "crds/chatcluster.yaml is stale: run `cargo run -p operator -- crd > crds/chatcluster.yaml`"
    );
}

#[test]
fn the_minimal_example_parses_with_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/minimal.yaml"
    );
    let cluster: ChatCluster =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &cluster.spec;
    assert_eq!(spec.nodes.replicas, 2);
    assert_eq!(spec.nodes.drain_timeout_seconds, 25);
    assert!(!spec.nodes.autoscaling.enabled);
    assert_eq!(spec.consumer.batch_size, 1000);
    assert_eq!(spec.kafka.topic.partitions, 3);
    assert_eq!(spec.kafka.topic.retention_hours, 168);
    assert_eq!(spec.images.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert!(spec.auth.is_none());
}

#[test]
fn autoscaling_bounds_must_be_ordered() {
    let ok = serde_json::to_value(AutoscalingSpec::default()).unwrap();
    assert!(AutoscalingSpec::validate_cel(&ok, None).is_ok());
    let bad = json!({"enabled": true, "minReplicas": 5, "maxReplicas": 2, "targetCpuUtilizationPercentage": 70});
    let err = format!(
        "{:?}",
        AutoscalingSpec::validate_cel(&bad, None).unwrap_err()
    );
    assert!(err.contains("minReplicas must not exceed"), "{err}");
}

#[test]
fn an_enabled_ingress_needs_a_host() {
    assert!(IngressSpec::validate_cel(&json!({"enabled": false}), None).is_ok());
    assert!(
        IngressSpec::validate_cel(&json!({"enabled": true, "host": "chat.example.com"}), None)
            .is_ok()
    );
    let err = format!(
        "{:?}",
        IngressSpec::validate_cel(&json!({"enabled": true}), None).unwrap_err()
    );
    assert!(err.contains("ingress.host is required"), "{err}");
}

#[test]
fn the_topic_name_cannot_change() {
    let old =
        json!({"name": "chat-a", "partitions": 3, "replicationFactor": 1, "retentionHours": 1});
    let same =
        json!({"name": "chat-a", "partitions": 6, "replicationFactor": 1, "retentionHours": 1});
    let renamed =
        json!({"name": "chat-b", "partitions": 3, "replicationFactor": 1, "retentionHours": 1});
    let unnamed = json!({"partitions": 3, "replicationFactor": 1, "retentionHours": 1});
    assert!(
        TopicSpec::validate_cel(&same, Some(&old)).is_ok(),
        "other fields may change"
    );
    assert!(
        TopicSpec::validate_cel(&unnamed, None).is_ok(),
        "a default name is fine on create"
    );
    let err = format!(
        "{:?}",
        TopicSpec::validate_cel(&renamed, Some(&old)).unwrap_err()
    );
    assert!(err.contains("immutable"), "{err}");
    assert!(
        TopicSpec::validate_cel(&unnamed, Some(&old)).is_err(),
        "nor be removed"
    );
}

#[test]
fn the_crd_serves_scale_status_and_printer_columns() {
    use kube::CustomResourceExt;
    let crd = ChatCluster::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("chatclusters.realchat.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["chat".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let scale = version
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.nodes.replicas");
    assert_eq!(scale.status_replicas_path, ".status.nodes.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.nodes.selector")
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Ready", "Nodes", "Consumers", "Topic", "Endpoint", "Age"]
    );
}
