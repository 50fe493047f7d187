//! What can go wrong in any store, as the HTTP layer and the background tasks see it.

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take or answer requests right now (full disk, read-only file, gone).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database answers but its schema is not the one this binary expects.
    #[error("schema not applied: {0}")]
    SchemaMismatch(String),
    /// The store is shutting down and takes no more writes.
    #[error("storage is shutting down")]
    ShuttingDown,
    /// A read did not finish within its deadline and was stopped.
    #[error("the read did not finish within its deadline")]
    Timeout,
}
