//! tagsync keeps Azure IP firewalls in step with Microsoft's published
//! service tags.
//!
//! # Layout
//!
//! A pipeline of plain stages: feed (fetch, parse) -> tags (select,
//! PrefixSet) -> history (SQLite) -> plan (pure) -> targets (adapters).
//! Only [`run`], [`reconcile`] and [`commands`] know them all.
//!
//! - [`feed`]: the service tags feed. [`feed::scan()`] streams a feed and keeps
//!   only the tags asked for; [`feed::source`] finds and fetches it (download
//!   center discovery, pinned URL, file, ARM Discovery API).
//! - [`tags`]: which tags are followed (names, regional sub-tags, unassigned).
//! - [`prefix`]: [`prefix::PrefixSet`], the canonical set of prefixes
//!   everything is expressed in.
//! - [`history`]: the SQLite history of runs, snapshots and changes;
//!   [`ledger`]: the ownership ledger and the record of applies, in it.
//! - [`sync`]: the feed stage of a run: fetch, validate, select, record.
//! - [`fit`]: fitting prefixes into a rule budget (exact summarization).
//! - [`plan`]: the pure plan of one target: add, remove, keep, guards.
//! - [`targets`]: one adapter per kind of resource (Event Hubs, Service Bus,
//!   Storage) behind one trait, and the registry.
//! - [`reconcile`]: plan and apply every target, one code path for plan,
//!   dry-run, sync and apply.
//! - [`run`]: run once (feed, then targets), shared by `sync`, the CronJob
//!   and the daemon; [`daemon`]: the schedule and the HTTP endpoints;
//!   [`metrics`]: the Prometheus registry.
//! - [`azure`]: Entra ID credentials and the Resource Manager client;
//!   [`http`]: the feed's HTTP client.
//! - [`config`]: TOML file, environment and flags, validated into
//!   [`config::Settings`].
//! - [`cli`], [`commands`], [`render`]: arguments, command execution, and
//!   the human and JSON output of each command.
//! - [`error`]: the top-level error and the documented exit codes.

pub(crate) mod azure;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod digest;
pub(crate) mod error;
pub mod feed;
pub(crate) mod feed_stage;
pub mod fit;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod ledger;
pub mod metrics;
pub(crate) mod plan;
pub mod prefix;
pub(crate) mod reconcile;
pub(crate) mod render;
pub(crate) mod run;
pub(crate) mod tags;
pub(crate) mod targets;
