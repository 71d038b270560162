//! PostgreSQL: the operations of `store::templates`.

#[allow(unused_imports)]
use super::Postgres;
