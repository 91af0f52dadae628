//! tagsync keeps Azure IP firewalls in step with Microsoft's published
//! service tags.
//!
//! # Layout
//!
//! A pipeline of plain stages: feed (fetch, parse) -> tags (select,
//! PrefixSet) -> history (SQLite) -> plan (pure) -> targets (adapters).
//! Only `run` and `reconcile` know them all; the modules form a DAG
//! (each settings type lives with the module that uses it, and `config`
//! only builds them).
//!
//! - [`feed`]: the service tags feed. [`feed::scan()`] streams a feed and keeps
//!   only the tags asked for; `feed::source` finds and fetches it (download
//!   center discovery, pinned URL, file, ARM Discovery API).
//! - `tags`: which tags are followed: the one selection (names, regional
//!   sub-tags, unassigned) over a feed's tags or a run's recorded ones.
//! - [`prefix`]: [`prefix::PrefixSet`], the canonical set of prefixes
//!   everything is expressed in; `digest`: SHA-256 in hex.
//! - `history`: the SQLite history of runs, snapshots and changes;
//!   `ledger`: the ownership ledger and the record of applies, in it;
//!   `outbox`: the notifications waiting for their receivers, in it.
//! - `notify`: CloudEvents about feed changes and applies, built with the
//!   facts they describe and delivered after the run.
//! - `feed_stage`: the feed stage of a run: fetch, validate, select, record.
//! - [`fit`]: fitting prefixes into a rule budget (exact summarization).
//! - `plan`: the pure plan of one target (fit, then add, remove, keep,
//!   guards), computed once.
//! - `targets`: one adapter per kind of resource (Event Hubs, Service Bus,
//!   Storage, Event Grid, Key Vault) behind one small trait, and the registry.
//! - `reconcile`: the per-target pipeline: read, desired, plan, the mode's
//!   step, write, verify, ledger.
//! - `run`: a `run::Session` and a `run::Mode`: the one run path of
//!   `sync`, `plan`, `apply`, `targets check/adopt` and each daemon tick;
//!   `daemon`: the schedule; `status_server`: its HTTP endpoints (hyper,
//!   every connection bounded); [`metrics`]: the Prometheus registry.
//! - `azure`: Entra ID credentials, the Resource Manager client and the
//!   transport trait adapters call it through; `http`: the feed's client.
//! - `config`: TOML file, environment and flags, validated into
//!   `config::Settings`.
//! - `cli`, [`commands`], `render`: arguments, command execution, and
//!   the human and JSON output of each command; `export`: the rules `sync`
//!   would write, as JSON, Terraform variables or Bicep parameters.
//! - `error`: the top-level error and the documented exit codes; `suggest`:
//!   "did you mean" for mistyped names.

pub(crate) mod azure;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod digest;
pub(crate) mod error;
pub(crate) mod export;
pub mod feed;
pub(crate) mod feed_stage;
pub mod fit;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod ledger;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod outbox;
pub(crate) mod plan;
pub mod prefix;
pub(crate) mod reconcile;
pub(crate) mod render;
pub(crate) mod run;
pub(crate) mod status_server;
pub(crate) mod suggest;
pub(crate) mod tags;
pub(crate) mod targets;
