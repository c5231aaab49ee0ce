//! The schema and the batch writer against a real PostgreSQL: concurrent
//! migrations, idempotent replays, and seq conflicts reported rather than
//! dropped. Needs `DATABASE_URL` (set by scripts/services).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use consumer::decode::{Row, Source};
use consumer::store::{migrate, write_batch};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// A fresh database of its own on the harness's server.
async fn fresh_database() -> (PgPool, String) {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run this test through scripts/test (or scripts/services -- cargo test)");
    let admin = PgPool::connect(&url).await.unwrap();
    let name = format!("schema_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    (
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap(),
        url,
    )
}

fn row(room: &str, seq: i64) -> Row {
    Row {
        id: Uuid::now_v7(),
        room: room.into(),
        seq,
        user: "ann".into(),
        body: format!("m{seq}"),
        sent_at: Utc::now(),
        produced_at: Utc::now(),
        origin_node: "n".into(),
        client_id: format!("c{seq}"),
        source: Source {
            partition: 0,
            offset: seq,
        },
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run through scripts/test"]
async fn two_workers_migrating_at_once_do_not_race() {
    let (pool, url) = fresh_database().await;
    let other = PgPool::connect(&url).await.unwrap();
    let (a, b) = tokio::join!(migrate(&pool), migrate(&other));
    a.unwrap();
    b.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 1);
    // Pagination by (room, seq) walks the unique index.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM messages WHERE room = 'r' AND seq < 100 ORDER BY seq DESC LIMIT 50",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|line| line.contains("messages_room_seq")),
        "{plan:?}"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run through scripts/test"]
async fn a_replayed_batch_inserts_nothing_twice_and_seq_conflicts_are_reported() {
    let (pool, _) = fresh_database().await;
    migrate(&pool).await.unwrap();
    let batch: Vec<Row> = (1..=100).map(|seq| row("r", seq)).collect();
    let first = write_batch(&pool, &batch).await.unwrap();
    assert_eq!((first.inserted, first.replayed), (100, 0));
    let again = write_batch(&pool, &batch).await.unwrap();
    assert_eq!((again.inserted, again.replayed), (0, 100));
    assert!(again.conflicts.is_empty());

    // A different message claiming an existing seq is a conflict, not a replay.
    let intruder = row("r", 50);
    let mixed = vec![row("r", 101), intruder.clone()];
    let written = write_batch(&pool, &mixed).await.unwrap();
    assert_eq!(written.inserted, 1);
    assert_eq!(written.conflicts, vec![intruder]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 101);
}
