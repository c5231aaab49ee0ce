//! `consumer`: reads the RealChat message topic as a member of a consumer
//! group and stores the messages in PostgreSQL in batches.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use consumer::http::{Ops, router};
use consumer::metrics::Metrics;
use consumer::worker::{Health, Settings, Worker, ensure_topic};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "consumer",
    version,
    about = "RealChat consumer: Kafka -> PostgreSQL persistence workers"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the message topic and persist messages (applies migrations first).
    Run(RunArgs),
    /// Apply the database migrations and exit.
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS")]
    brokers: String,
    /// Topic holding the chat message records.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "realchat.messages")]
    topic: String,
    /// Consumer group id; all workers of one chat cluster share it.
    #[arg(long, env = "KAFKA_GROUP", default_value = "realchat-consumer")]
    group: String,
    /// Topic for records that cannot be stored (created if missing).
    #[arg(
        long,
        env = "KAFKA_DEAD_LETTER_TOPIC",
        default_value = "realchat.messages.dlq"
    )]
    dead_letter_topic: String,
    /// Extra librdkafka setting KEY=VALUE (SASL, TLS, tuning); repeatable, comma separated in the env var.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = realchat_protocol::kafka::parse_option)]
    kafka_options: Vec<(String, String)>,
    /// Milliseconds without heartbeats after which a worker is dropped from the group.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10000)]
    session_timeout_ms: u64,
    /// Rebalance timeout: longest a rebalance waits for members to rejoin, in milliseconds.
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL_MS", default_value_t = 45000)]
    max_poll_interval_ms: u64,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Most records written in one transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// Longest wait for a batch to fill after its first record, in milliseconds.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 50)]
    batch_linger_ms: u64,
    /// Longest pause between retries while PostgreSQL is failing, in milliseconds.
    #[arg(long, env = "MAX_BACKOFF_MS", default_value_t = 5000)]
    max_backoff_ms: u64,
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:9090")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match cli.command {
        Command::Migrate { database_url } => {
            let pool = consumer::connect_database(&database_url, &shutdown).await?;
            consumer::store::migrate(&pool)
                .await
                .context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Run(args) => run(args, shutdown).await,
    }
}

async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{addr}");
    let ops = router(Ops {
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let server_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, ops)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "operations endpoint failed");
        }
    });

    let pool = consumer::connect_database(&args.database_url, &shutdown).await?;
    consumer::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    let settings = Settings {
        brokers: args.brokers,
        topic: args.topic,
        group: args.group,
        dead_letter_topic: args.dead_letter_topic,
        batch_size: args.batch_size.max(1),
        batch_linger: Duration::from_millis(args.batch_linger_ms),
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        max_poll_interval: Duration::from_millis(
            args.max_poll_interval_ms.max(args.session_timeout_ms),
        ),
        kafka_options: args.kafka_options,
        max_backoff: Duration::from_millis(args.max_backoff_ms.max(100)),
    };
    if let Err(err) = ensure_topic(&settings, &settings.dead_letter_topic).await {
        tracing::warn!(%err, topic = %settings.dead_letter_topic, "could not ensure the dead-letter topic exists");
    }
    Worker::new(settings, pool, metrics, health)?
        .run(shutdown)
        .await
}

/// SIGTERM (Kubernetes) or Ctrl-C: finish the batch in hand and leave.
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down: finishing the current batch");
    shutdown.cancel();
}
