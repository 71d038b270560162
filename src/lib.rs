//! clicktermd: a self-hosted, ClickTerm-compatible clickwrap-consent and signed-webhook appliance.
//!
//! [`run`] wires the pieces together: the [`store`] (SQLite), the [`http`] server (public client API,
//! admin API, health) and, as they land, the webhook dispatcher. `main.rs` is only the command line.
#![forbid(unsafe_code)]

pub mod admins;
pub mod certificate;
pub mod clickwrap;
pub mod client_cert;
pub mod config;
pub mod credentials;
pub mod dispatch;
pub mod error;
pub mod health;
pub mod http;
pub mod integrations;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod receiver;
pub mod signature;
pub mod store;
pub mod templates;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::Store;

/// Opens the configured store: the SQLite database in the data directory, or the PostgreSQL database
/// of `storage.postgres_url` (creating and migrating either).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(match config.storage.backend {
        config::Backend::Sqlite => {
            Store::open(&config.storage.data_dir, config.storage.synchronous)?
        }
        config::Backend::Postgres => Store::open_postgres(&config.storage).await?,
    })
}

/// Runs the appliance on `listener` until `shutdown` resolves. Everything it needs is an argument, so
/// tests start it on port 0 with a temporary data directory.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_as(config, listener, shutdown, "clicktermd").await
}

/// [`run`], where `cli` is how to run the command line against this server (the program with the
/// `--config` and `--data-dir` it was started with): the first-start banner says it.
pub async fn run_as(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    cli: &str,
) -> anyhow::Result<()> {
    serve_all(config, listener, shutdown, cli, None).await
}

/// [`run`], with the dispatcher reporting to `quiet` whenever it has nothing to do: how tests wait
/// for it instead of sleeping.
pub async fn run_reporting_quiet(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    quiet: dispatch::Quiet,
) -> anyhow::Result<()> {
    serve_all(config, listener, shutdown, "clicktermd", Some(quiet)).await
}

async fn serve_all(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    cli: &str,
    quiet: Option<dispatch::Quiet>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let budget = connection_budget(&config)?;
    let _serving = store::ServeLock::acquire(&config.storage.data_dir)?;
    // A database that cannot be written is a start-up error with its cause, not a server that answers
    // every write with an error.
    let dir = config.storage.data_dir.display();
    let full =
        || store::free_bytes(&config.storage.data_dir).is_some_and(|b| b < store::FULL_BELOW_BYTES);
    let store = match open_store(&config).await {
        Ok(store) => store,
        Err(e) if full() => anyhow::bail!(
            "cannot start: the disk holding the database in {dir} is full ({e}). Free some space \
             and start again"
        ),
        Err(e) => return Err(e),
    };
    if let Err(e) = store.probe_write().await {
        if e.is_disk_full() || full() {
            anyhow::bail!(
                "cannot start: the disk holding the database in {dir} is full. Free some space and \
                 start again"
            );
        }
        anyhow::bail!("cannot start: the database in {dir} cannot be written: {e}");
    }
    let recovered = store.recover_interrupted_deliveries().await?;
    if recovered > 0 {
        tracing::warn!(
            deliveries = recovered,
            "deliveries were in flight when the previous process stopped; attempting them again"
        );
    }
    if let Some(password) = admins::ensure_initial_admin(&store, &config.storage.data_dir).await? {
        announce_initial_password(&config, &password, cli);
    }
    let signature_key = clickwrap::signature_key(&store).await?;
    let client_certificates = Arc::new(
        integrations::load_configured_certificates(&store, &config.webhooks.client_certificates)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?,
    );
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(http::tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), "clicktermd {} serving on {scheme}://{addr}", env!("CARGO_PKG_VERSION"));
    let guard = dispatch::guard::UrlGuard::from_config(&config.webhooks, Some(addr))
        .map_err(|e| anyhow::anyhow!(e))?;
    let guard = Arc::new(guard);
    let wake = store.delivery_wake();
    let mut metrics = metrics::Metrics::new();
    metrics.register_store(store.writer_stats(), config.storage.data_dir.clone());
    let metrics = Arc::new(metrics);
    let mut dispatcher = dispatch::Dispatcher::new(
        store.clone(),
        &config.webhooks,
        &guard,
        client_certificates.by_integration(),
        wake.clone(),
        metrics.clone(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(quiet) = quiet {
        dispatcher.report_quiet_to(quiet);
    }
    // One shutdown signal, watched by the HTTP server and the dispatcher.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let dispatcher = tokio::spawn(dispatcher.run(stop_rx.clone()));
    let disk_watch = tokio::spawn(store::watch_disk(store.clone(), stop_rx.clone()));
    let pruning = tokio::spawn(dispatch::run_pruning(
        store.clone(),
        config.webhooks.attempt_retention_days,
        stop_rx.clone(),
    ));
    let settle = Arc::new(tokio::sync::Notify::new());
    let settling = tokio::spawn(dispatch::settle::run_settling(
        store.clone(),
        settle.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    let signals = http::Signals { wake, settle };
    let state = http::AppState::new(
        config.clone(),
        store,
        signature_key,
        guard,
        signals,
        metrics,
        client_certificates,
    );
    let mut http_stop = stop_rx;
    let http_stopped = async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    };
    let limits = http::Limits::new(&config, &budget);
    http::serve(listener, http::router(state), tls, limits, http_stopped)
        .await
        .context("HTTP server")?;
    dispatcher.await.context("webhook dispatcher")?;
    pruning.await.context("attempt pruning")?;
    disk_watch.await.context("disk watch")?;
    settling.await.context("settling deliveries")?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the file limit as far as allowed and fits `server.max_connections` within it, saying what
/// was chosen.
fn connection_budget(config: &Config) -> anyhow::Result<http::ConnectionBudget> {
    let file_limit =
        http::raise_file_limit().context("cannot read the file limit (RLIMIT_NOFILE)")?;
    let budget =
        http::ConnectionBudget::plan(file_limit, config).map_err(|e| anyhow::anyhow!(e))?;
    if budget.clamped {
        tracing::warn!(
            configured = config.server.max_connections,
            max_connections = budget.max_connections,
            file_limit,
            reserve = budget.reserve,
            "server.max_connections lowered to fit the file limit (ulimit -n, LimitNOFILE=) after \
             the descriptors kept for the database and webhooks"
        );
    } else {
        tracing::info!(
            max_connections = budget.max_connections,
            file_limit,
            reserve = budget.reserve,
            "connection budget"
        );
    }
    Ok(budget)
}

/// Shows the first-start password once. It goes to standard error (the journal under systemd), not
/// through the log pipeline, which never carries secrets; a 0600 copy waits in the data directory until
/// the password is changed.
fn announce_initial_password(config: &Config, password: &str, cli: &str) {
    let file = config.storage.data_dir.join(admins::INITIAL_PASSWORD_FILE);
    eprintln!(
        "\n  clicktermd created the admin user {:?} with the password:\n\n      {password}\n\n  \
         It is shown once (a copy is in {}, readable only by this user).\n  \
         Change it with: {cli} admin set-password --username admin\n",
        admins::INITIAL_ADMIN,
        file.display()
    );
}
