//! PostgreSQL: the operations of `store::stats`.

#[allow(unused_imports)]
use super::Postgres;
