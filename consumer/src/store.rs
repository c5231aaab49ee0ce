//! Writing batches to PostgreSQL.
//!
//! One transaction per batch, one multi-row `INSERT … SELECT FROM UNNEST(…)
//! ON CONFLICT DO NOTHING`: a replayed batch (after a crash, before its
//! offsets were committed) inserts nothing twice. A row that collides on
//! `(room, seq)` with a *different* id is not a replay but two messages
//! claiming one seq; it is reported so it can be dead-lettered instead of
//! silently dropped.

use std::collections::HashSet;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::decode::Row;

/// Migrations embedded in the binary. sqlx takes a PostgreSQL advisory lock
/// while applying them, so consumers starting together do not race.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What a batch write did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows newly inserted.
    pub inserted: usize,
    /// Rows already present (same id): replays.
    pub replayed: usize,
    /// Rows whose `(room, seq)` belongs to another message.
    pub conflicts: Vec<Row>,
}

pub async fn write_batch(pool: &PgPool, rows: &[Row]) -> Result<Written, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Written::default());
    }
    let mut tx = pool.begin().await?;
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, room, seq, user_name, body, sent_at, produced_at, origin_node, client_id, kafka_partition, kafka_offset)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[],
                              $7::timestamptz[], $8::text[], $9::text[], $10::int[], $11::bigint[])
         ON CONFLICT DO NOTHING
         RETURNING id",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.room.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.user.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.sent_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.produced_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.origin_node.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.client_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.source.partition).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.source.offset).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut written = Written {
        inserted: inserted.len(),
        ..Written::default()
    };
    if inserted.len() < rows.len() {
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();
        let skipped: Vec<Uuid> = rows
            .iter()
            .map(|r| r.id)
            .filter(|id| !inserted.contains(id))
            .collect();
        let present: HashSet<Uuid> =
            sqlx::query_scalar("SELECT id FROM messages WHERE id = ANY($1)")
                .bind(&skipped)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        for row in rows.iter().filter(|r| !inserted.contains(&r.id)) {
            if present.contains(&row.id) {
                written.replayed += 1;
            } else {
                written.conflicts.push(row.clone());
            }
        }
    }
    tx.commit().await?;
    Ok(written)
}
