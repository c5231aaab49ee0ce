//! JWT authentication against a real node: HS256 and RS256 keys, token by
//! query parameter or first `auth` frame, and every way a token is refused.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, Ended, Node};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-with-enough-entropy";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(secret: &str, claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn node() -> Node {
    Node::start(&["--jwt-hs256-secret", SECRET, "--auth-timeout-secs", "2"])
}

async fn expect_refused(node: &Node, query: &str, reason_mentions: &str) {
    let ws = Client::connect_raw(&node.url(query)).await;
    let mut client = Client {
        ws,
        user: "intruder".into(),
    };
    match client.until_end(Duration::from_secs(5)).await {
        Ended::Closed(Some((code, reason))) => {
            assert_eq!(code, 4001, "{query}: {reason}");
            assert!(
                reason.contains(reason_mentions),
                "{query}: `{reason}` should mention `{reason_mentions}`"
            );
        }
        other => panic!("{query}: expected close 4001, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_names_the_user_and_limits_rooms() {
    let node = node();
    let token = hs256(
        SECRET,
        json!({"sub": "ann", "exp": now() + 600, "rooms": ["team-*"]}),
    );
    let ws = Client::connect_raw(&node.url(&format!("token={token}&name=mallory"))).await;
    let mut ann = Client {
        ws,
        user: "ann".into(),
    };
    let welcome = ann.expect("welcome").await;
    assert_eq!(
        welcome["user"], "ann",
        "the token's sub wins over a chosen name"
    );
    assert_eq!(welcome["protocol"], 1);
    ann.join("team-eng").await;
    ann.send(json!({"type": "join", "room": "lobby"})).await;
    let error = ann.expect("error").await;
    assert_eq!(error["code"], "forbidden_room");
    assert_eq!(error["ref"], "lobby");
    // Still connected and usable.
    ann.say("team-eng", "c1", "hi").await;
}

#[tokio::test]
async fn a_token_may_come_in_a_first_auth_frame() {
    let node = node();
    let ws = Client::connect_raw(&node.url("")).await;
    let mut bob = Client {
        ws,
        user: "bob".into(),
    };
    let token = hs256(SECRET, json!({"sub": "bob", "exp": now() + 600}));
    bob.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(bob.expect("welcome").await["user"], "bob");
    bob.join("anything").await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001() {
    let node = node();
    let expired = hs256(SECRET, json!({"sub": "ann", "exp": now() - 3600}));
    expect_refused(&node, &format!("token={expired}"), "expired").await;

    let wrong_key = hs256(
        "some-other-secret",
        json!({"sub": "ann", "exp": now() + 600}),
    );
    expect_refused(&node, &format!("token={wrong_key}"), "signature").await;

    // alg: none, no signature.
    let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let claims = json!({"sub": "ann", "exp": now() + 600}).to_string();
    let unsigned = format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.as_bytes()));
    expect_refused(&node, &format!("token={unsigned}"), "token").await;

    expect_refused(&node, "token=not.a.jwt", "malformed").await;
    // No token at all: the auth frame never comes.
    expect_refused(&node, "name=ann", "authentication required").await;

    assert!(common::metric(&node, "chat_auth_failures_total").await >= 5.0);
}

#[tokio::test]
async fn a_first_frame_that_is_not_auth_is_refused() {
    let node = node();
    let ws = Client::connect_raw(&node.url("")).await;
    let mut eve = Client {
        ws,
        user: "eve".into(),
    };
    eve.send(json!({"type": "join", "room": "lobby"})).await;
    match eve.until_end(Duration::from_secs(5)).await {
        Ended::Closed(Some((code, _))) => assert_eq!(code, 4001),
        other => panic!("expected 4001, got {other:?}"),
    }
}

#[tokio::test]
async fn rs256_tokens_are_checked_against_the_public_key() {
    let dir = std::env::temp_dir().join(format!("realchat-rs256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let node = Node::start(&["--jwt-rs256-public-key-file", public.to_str().unwrap()]);

    let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let token = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "ann", "exp": now() + 600}),
        &key,
    )
    .unwrap();
    let ws = Client::connect_raw(&node.url(&format!("token={token}"))).await;
    let mut ann = Client {
        ws,
        user: "ann".into(),
    };
    assert_eq!(ann.expect("welcome").await["user"], "ann");

    // An HS256 token "signed" with the public key must not pass (key confusion).
    let public_pem = std::fs::read(&public).unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ann", "exp": now() + 600}),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    expect_refused(&node, &format!("token={forged}"), "algorithm").await;
    let _ = std::fs::remove_dir_all(&dir);
}
