//! The closed vocabularies of `model` as SQL values: each is stored as its one spelling, and a value
//! read back that is not one of them is an error naming the column's type, never a silent default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::model::{
    Action, AttemptOutcome, DeliveryState, EventType, IntegrationStatus, Role, Trigger,
};

macro_rules! stored_as_text {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!("{text:?} is not a {} (one of {})", stringify!($name), $name::spellings())
                            .into(),
                    )
                })
            }
        }
    )+};
}

stored_as_text!(
    Action,
    AttemptOutcome,
    DeliveryState,
    EventType,
    IntegrationStatus,
    Role,
    Trigger
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The CHECK constraints of `schema.sql` list exactly the spellings of the vocabulary, in order.
    #[test]
    fn the_schema_allows_exactly_each_vocabulary() {
        let check = |column: &str| -> Vec<String> {
            let sql = super::super::SCHEMA_SQL;
            let start = sql
                .find(&format!("CHECK ({column} IN ("))
                .unwrap_or_else(|| panic!("no CHECK on {column}"));
            let rest = &sql[start..];
            let list = &rest[rest.find("IN (").unwrap() + 4..rest.find("))").unwrap()];
            list.split(',')
                .map(|v| v.trim().trim_matches('\'').to_string())
                .collect()
        };
        let spelled = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let states: Vec<_> = DeliveryState::ALL.iter().map(|s| s.as_str()).collect();
        let outcomes: Vec<_> = AttemptOutcome::ALL.iter().map(|s| s.as_str()).collect();
        let triggers: Vec<_> = Trigger::ALL.iter().map(|s| s.as_str()).collect();
        let actions: Vec<_> = Action::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(check("state"), spelled(&states));
        assert_eq!(check("outcome"), spelled(&outcomes));
        assert_eq!(check("chain_trigger"), spelled(&triggers));
        assert_eq!(check("trigger"), spelled(&triggers));
        assert_eq!(check("action"), spelled(&actions));
        let roles: Vec<_> = Role::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(check("role"), spelled(&roles));
    }

    #[test]
    fn a_stored_value_outside_the_vocabulary_is_an_error_that_names_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read: rusqlite::Result<DeliveryState> =
            conn.query_row("SELECT 'delivered'", [], |r| r.get(0));
        let err = read.unwrap_err().to_string();
        assert!(
            err.contains("\"delivered\" is not a DeliveryState"),
            "{err}"
        );
        let state: DeliveryState = conn
            .query_row("SELECT ?1", [DeliveryState::InFlight], |r| r.get(0))
            .unwrap();
        assert_eq!(state, DeliveryState::InFlight);
    }
}
