//! PostgreSQL: the operations of `store::settings`.

#[allow(unused_imports)]
use super::Postgres;
