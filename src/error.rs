//! The error of the service layer (`integrations`, `admins`, …): what went wrong in domain terms.
//! `http` maps it to a status code in exactly one place; the CLI prints it.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be accepted; `field` names it as the caller spelt it.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The caller is known but may not do this (disabled integration, template not linked, origin).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The caller could not be identified (unknown or deleted App ID).
    #[error("{0}")]
    Unauthorized(String),
    /// The thing existed but is no longer usable (an expired signature).
    #[error("{0}")]
    Gone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<crate::store::templates::UnknownIntegration> for Error {
    fn from(e: crate::store::templates::UnknownIntegration) -> Error {
        Error::invalid(
            "integrations",
            format!("no integration with App ID {:?}", e.0),
        )
    }
}

pub type Result<T> = std::result::Result<T, Error>;
