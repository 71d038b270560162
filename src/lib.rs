//! clicktermd: a self-hosted, ClickTerm-compatible clickwrap-consent and signed-webhook appliance.
//!
//! [`run`] wires the pieces together: the [`store`] (SQLite), the [`http`] server (public client API,
//! admin API, health) and, as they land, the webhook dispatcher. `main.rs` is only the command line.
#![forbid(unsafe_code)]

pub mod admins;
pub mod clickwrap;
pub mod config;
pub mod credentials;
pub mod dispatch;
pub mod error;
pub mod http;
pub mod integrations;
pub mod metrics;
pub mod model;
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

/// Opens the store in the configured data directory (creating and migrating it).
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open(
        &config.storage.data_dir,
        config.storage.synchronous,
    )?)
}

/// Runs the appliance on `listener` until `shutdown` resolves. Everything it needs is an argument, so
/// tests start it on port 0 with a temporary data directory.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let _serving = store::ServeLock::acquire(&config.storage.data_dir)?;
    let store = open_store(&config)?;
    let recovered = store
        .write(|c| store::deliveries::recover_interrupted(c, model::Timestamp::now()))
        .await?;
    if recovered > 0 {
        tracing::warn!(
            deliveries = recovered,
            "deliveries were in flight when the previous process stopped; attempting them again"
        );
    }
    if let Some(password) = admins::ensure_initial_admin(&store, &config.storage.data_dir).await? {
        announce_initial_password(&config, &password);
    }
    let signature_key = clickwrap::signature_key(&store).await?;
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
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut metrics = metrics::Metrics::new();
    metrics.register_store(store.writer_stats());
    let metrics = Arc::new(metrics);
    let dispatcher = dispatch::Dispatcher::new(
        store.clone(),
        &config.webhooks,
        &guard,
        wake.clone(),
        metrics.clone(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    // One shutdown signal, watched by the HTTP server and the dispatcher.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let dispatcher = tokio::spawn(dispatcher.run(stop_rx.clone()));
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
    );
    let mut http_stop = stop_rx;
    let http_stopped = async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    };
    http::serve(listener, http::router(state), tls, http_stopped)
        .await
        .context("HTTP server")?;
    dispatcher.await.context("webhook dispatcher")?;
    pruning.await.context("attempt pruning")?;
    settling.await.context("settling deliveries")?;
    tracing::info!("stopped");
    Ok(())
}

/// Shows the first-start password once. It goes to standard error (the journal under systemd), not
/// through the log pipeline, which never carries secrets; a 0600 copy waits in the data directory until
/// the password is changed.
fn announce_initial_password(config: &Config, password: &str) {
    let file = config.storage.data_dir.join(admins::INITIAL_PASSWORD_FILE);
    eprintln!(
        "\n  clicktermd created the admin user {:?} with the password:\n\n      {password}\n\n  \
         It is shown once (a copy is in {}, readable only by this user).\n  \
         Change it with: clicktermd admin set-password --username admin\n",
        admins::INITIAL_ADMIN,
        file.display()
    );
}
