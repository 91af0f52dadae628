//! The error type of a command and its documented exit code.
//!
//! Library modules have their own typed errors; this enum gathers them at
//! the top so each maps to one exit code and one short `kind` label (stored
//! with failed runs, and later used as a metric label).

use crate::config::ConfigError;
use crate::feed::FeedError;
use crate::feed::source::{LoadError, SourceError};
use crate::history::HistoryError;

/// Documented exit codes (README, "Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const FEED: u8 = 3;
    pub const DATABASE: u8 = 4;
    pub const TARGET_FAILED: u8 = 5;
    pub const GUARD_REFUSED: u8 = 6;
    pub const INTERRUPTED: u8 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// A valid feed that tagsync will not act on (e.g. changeNumber regression).
    #[error("refusing the feed: {0}")]
    Refused(String),
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Azure cannot be reached at all (credentials, client): every target fails.
    #[error("{0}")]
    Azure(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// SIGTERM or SIGINT before the run was done.
    #[error("stopped by SIGTERM or SIGINT {0}")]
    Interrupted(&'static str),
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Source(e) => Error::Source(e),
            LoadError::Feed(e) => Error::Feed(e),
        }
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => exit::USAGE,
            Error::Source(_) | Error::Feed(_) | Error::Refused(_) => exit::FEED,
            Error::History(_) => exit::DATABASE,
            Error::Azure(_) => exit::TARGET_FAILED,
            Error::Internal(_) => exit::INTERNAL,
            Error::Interrupted(_) => exit::INTERRUPTED,
        }
    }

    /// A short, bounded label for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::Source(_) => "source",
            Error::Feed(_) => "feed",
            Error::Refused(_) => "refused",
            Error::History(_) => "database",
            Error::Azure(_) => "azure",
            Error::Internal(_) => "internal",
            Error::Interrupted(_) => "interrupted",
        }
    }
}
