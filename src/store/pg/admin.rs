//! PostgreSQL: the operations of `store::admin`.

#[allow(unused_imports)]
use super::Postgres;
