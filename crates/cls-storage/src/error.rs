//! Storage errors.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What can go wrong in a repository function.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The resource does not exist or the caller may not see it (never distinguished).
    #[error("not found")]
    NotFound,
    /// A live resource with this name exists in the same scope.
    #[error("a {kind} named '{name}' already exists")]
    NameExists { kind: &'static str, name: String },
    /// The body's `resource_version` does not match the stored one.
    #[error("resource_version does not match the stored version")]
    VersionConflict,
    /// The `If-Match` version does not match the stored one.
    #[error("If-Match does not match the stored version")]
    PreconditionFailed,
    /// A stored JSON document does not decode into its domain type.
    #[error("stored {what} does not decode: {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Database(#[from] DieselError),
    /// A dedicated connection could not be opened.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
}

impl StorageError {
    /// Whether the database could not be reached (connection lost or refused), as opposed to
    /// a query that failed: the request may succeed when retried later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Connect(_))
            || matches!(
                self,
                StorageError::Database(
                    DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
                        | DieselError::BrokenTransactionManager
                )
            )
            || matches!(self, StorageError::Database(e) if e.to_string().contains("connection"))
    }

    /// Whether a database error is a violation of the named unique index.
    pub(crate) fn is_unique_violation(err: &DieselError, index: &str) -> bool {
        matches!(err, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(index))
    }

    /// A create's error: [`StorageError::NameExists`] when it violates `index`, the unique
    /// index of live names of that `kind`; otherwise the database error.
    pub(crate) fn on_create(err: DieselError, index: &str, kind: &'static str, name: &str) -> Self {
        if Self::is_unique_violation(&err, index) {
            StorageError::NameExists {
                kind,
                name: name.to_owned(),
            }
        } else {
            err.into()
        }
    }
}
