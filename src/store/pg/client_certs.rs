//! PostgreSQL: the operations of `store::client_certs`.

#[allow(unused_imports)]
use super::Postgres;
