//! tagsync keeps Azure IP firewalls in step with Microsoft's published
//! service tags.
//!
//! # Layout
//!
//! The work is a pipeline of plain stages; only [`commands`] and [`sync`]
//! know them all.
//!
//! - [`feed`]: the service tags feed. [`feed::scan`] streams a feed and keeps
//!   only the tags asked for; [`feed::source`] finds and fetches it (download
//!   center discovery, pinned URL, file).
//! - [`tags`]: which tags are followed (names, regional sub-tags).
//! - [`prefix`]: [`prefix::PrefixSet`], the canonical set of prefixes
//!   everything is expressed in.
//! - [`history`]: the SQLite history of runs, snapshots and changes.
//! - [`sync`]: run once: fetch, validate, select, record. Serves the manual
//!   sync, the CronJob and each daemon tick.
//! - [`http`]: the HTTP client (timeouts, retries, size cap, conditional GET).
//! - [`config`]: TOML file, environment and flags, validated into
//!   [`config::Settings`].
//! - [`cli`], [`commands`], [`render`]: arguments, command execution, and
//!   the human and JSON output of each command.
//! - [`error`]: the top-level error and the documented exit codes.

pub mod azure;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod feed;
pub mod fit;
pub mod history;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod prefix;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod sync;
pub mod tags;
pub mod targets;
