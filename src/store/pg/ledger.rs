//! PostgreSQL: the operations of `store::ledger`.

#[allow(unused_imports)]
use super::Postgres;
