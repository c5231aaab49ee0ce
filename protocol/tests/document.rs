//! docs/protocol.md is the protocol's specification: every frame shown in a
//! `json client` or `json server` block must parse into the Rust types and
//! serialize back to the same JSON, and every frame type must be shown.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use realchat_protocol::frames::CLIENT_FRAME_TYPES;
use realchat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use serde_json::Value;

/// (side, json) for every fenced example in the document.
fn examples() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("read docs/protocol.md");
    let mut examples = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, fence) if fence.starts_with("```json ") => {
                let side = fence.trim_start_matches("```json ").to_owned();
                current = Some((side, String::new()));
            }
            (Some(_), "```") => examples.extend(current.take()),
            (Some((_, body)), content) => body.push_str(content),
            (None, _) => {}
        }
    }
    examples
}

#[test]
fn every_documented_frame_round_trips() {
    let examples = examples();
    assert!(
        examples.len() >= 15,
        "found only {} examples",
        examples.len()
    );
    let mut client_types = BTreeSet::new();
    let mut server_types = BTreeSet::new();
    for (side, json) in &examples {
        let original: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let kind = original["type"].as_str().expect("type").to_owned();
        let round_tripped = match side.as_str() {
            "client" => {
                let frame = ClientFrame::parse(json).unwrap_or_else(|e| panic!("{json}: {e}"));
                client_types.insert(kind);
                serde_json::to_value(&frame).unwrap()
            }
            "server" => {
                let frame: ServerFrame =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
                server_types.insert(kind);
                serde_json::from_str(&frame.to_json()).unwrap()
            }
            other => panic!("unknown example side `{other}`"),
        };
        assert_eq!(round_tripped, original, "{side} frame does not round-trip");
    }
    let expected_client: BTreeSet<String> =
        CLIENT_FRAME_TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        client_types, expected_client,
        "every client frame type is documented"
    );
    let expected_server: BTreeSet<String> = [
        "welcome", "joined", "left", "message", "ack", "presence", "typing", "replayed", "error",
        "pong",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        server_types, expected_server,
        "every server frame type is documented"
    );
}

#[test]
fn documented_error_codes_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split("| code | cause |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("error code table");
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or("")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let all: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(
        documented, all,
        "the error table lists exactly the codes the server can send"
    );
}
