//! The end-to-end tests: one test binary (so the crate is linked once, not once per file), one module
//! per subject. Each drives the real server on a real loopback port, the real binary, real TLS
//! receivers, a real DNS server or a real browser; `common` is the harness they share.

mod common;

/// The store this binary's servers run on: SQLite here, PostgreSQL in `e2e_postgres` (the same
/// modules, compiled again with this set).
const POSTGRES: bool = false;

mod bench_large;
mod bench_quick;
mod cli;
mod clickwrap;
mod connections;
mod crash;
mod dashboard;
mod disk_full;
mod first_webhook;
mod foundation;
mod hardening;
mod harness_selftest;
mod ledger;
mod ledger_file;
mod mtls;
mod packaging;
mod proxy;
mod roles;
mod systemd;
mod templates;
mod tls;
mod walkthrough;
mod webhooks;
mod webhooks_sqlite;
mod widget;
