//! Command-line arguments, parsed purely (clap) before anything does I/O.
//!
//! [`Cli`] is the low-level form; [`crate::commands`] turns it and the
//! configuration into validated settings and runs the command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tagsync",
    version,
    about = "Keeps Azure IP firewalls in step with Microsoft's published service tags",
    long_about = None,
    after_help = "Exit codes: 0 success, 1 internal error, 2 usage or configuration error, \
                  3 feed or source error (including refused feeds), 4 database error or lock held."
)]
pub struct Cli {
    /// TOML configuration file (optional: built-in defaults without one).
    #[arg(long, global = true, env = "TAGSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// History database (default: [database] path, else ./tagsync.db).
    #[arg(long, global = true, env = "TAGSYNC_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Result format on stdout.
    #[arg(long, global = true, env = "TAGSYNC_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// Log format on stderr (json for Kubernetes log pipelines).
    #[arg(long, global = true, env = "TAGSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the feed, record it in the history and print what changed.
    Sync(SyncArgs),
    /// Inspect a feed without recording anything.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Recorded runs and what each changed.
    History(HistoryArgs),
    /// Prefixes added and removed between two recorded runs.
    Diff(DiffArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Read the feed from this file instead of the configured source.
    #[arg(long, value_name = "FILE", conflicts_with = "feed_url")]
    pub feed_file: Option<PathBuf>,
    /// Download the feed from this URL instead of the configured source.
    #[arg(long, value_name = "URL")]
    pub feed_url: Option<String>,
    /// Accept a feed whose changeNumber is lower than the last recorded one
    /// (recorded with the run).
    #[arg(long)]
    pub allow_regression: bool,
}

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// A tag's prefixes, counts and changeNumber.
    Show(FeedShowArgs),
}

#[derive(Debug, Args)]
pub struct FeedShowArgs {
    /// Tag to show (repeatable; default: the configured selection).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Read the feed from this file instead of the configured source.
    #[arg(long, value_name = "FILE")]
    pub feed_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only runs that recorded this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Run id (from `tagsync history`) or `latest`.
    pub from: String,
    /// Run id or `latest`.
    pub to: String,
    /// Only this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective settings.
    Check,
}
