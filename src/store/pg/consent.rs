//! PostgreSQL: the operations of `store::consent`.

#[allow(unused_imports)]
use super::Postgres;
