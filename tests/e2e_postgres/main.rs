//! The end-to-end tests again, on the PostgreSQL store: the same modules as `tests/e2e` (not copies),
//! compiled a second time with [`POSTGRES`] set, so every server the harness starts runs on a
//! database of its own in a PostgreSQL cluster this process starts (`common/postgres.rs`). Left out
//! are the subjects that are SQLite's own (its file, its crash recovery and full disk, the `.deb` and
//! its boot, the benchmark's large-database mode); `nodes.rs` adds what only PostgreSQL has (several
//! nodes on one database, the URL and its TLS, `migrate-store`). `bench_quick` runs the benchmark's
//! quick mode on a durable cluster of its own (the harness starts it).

#[path = "../e2e/common/mod.rs"]
mod common;

/// See `tests/e2e/main.rs`.
const POSTGRES: bool = true;

#[path = "../e2e/bench_quick.rs"]
mod bench_quick;

#[path = "../e2e/clickwrap.rs"]
mod clickwrap;
#[path = "../e2e/dashboard.rs"]
mod dashboard;
#[path = "../e2e/first_webhook.rs"]
mod first_webhook;
#[path = "../e2e/foundation.rs"]
mod foundation;
#[path = "../e2e/ledger.rs"]
mod ledger;
#[path = "../e2e/mtls.rs"]
mod mtls;
#[path = "../e2e/roles.rs"]
mod roles;
#[path = "../e2e/templates.rs"]
mod templates;
#[path = "../e2e/walkthrough.rs"]
mod walkthrough;
#[path = "../e2e/webhooks.rs"]
mod webhooks;
#[path = "../e2e/widget.rs"]
mod widget;

mod counts;
#[path = "nodes.rs"]
mod nodes;
mod plans;
