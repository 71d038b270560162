//! PostgreSQL: the operations of `store::events`.

#[allow(unused_imports)]
use super::Postgres;
