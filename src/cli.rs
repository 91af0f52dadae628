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
                  3 feed or source error (including refused feeds), 4 database error or lock held, \
                  5 a target failed, 6 a guard refused a target."
)]
pub struct Cli {
    /// TOML configuration file (optional: built-in defaults without one).
    #[arg(long, global = true, env = "TAGSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// History database (default: the configured database path, else ./tagsync.db).
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
    /// A plan for a pull-request comment (`plan`, `sync`, `apply`).
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the feed, record it, plan and apply every target.
    Sync(SyncArgs),
    /// Fetch and record the feed, then show what would change on every
    /// target, and why. Writes nothing to Azure.
    Plan(PlanArgs),
    /// Apply exactly a saved plan; refuse targets whose rules changed since.
    Apply(ApplyArgs),
    /// Return a target to the rules tagsync owned after an earlier apply
    /// (the ids of `history --target`), through the same plan and guards.
    Rollback(RollbackArgs),
    /// The rules `sync` would write to targets, as JSON, Terraform variables
    /// or a Bicep parameters file (fetches and records the feed like `plan`).
    Export(ExportArgs),
    /// Inspect and manage targets.
    #[command(subcommand)]
    Targets(TargetsCommand),
    /// Run on a cron schedule and serve /metrics, /healthz and /readyz.
    Daemon(DaemonArgs),
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
    #[command(flatten)]
    pub feed: FeedArgs,
    /// Plan and print, then stop: no write to any target.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these targets (repeatable; default all).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Lift the max_removal_ratio guard for this run.
    #[arg(long)]
    pub force: bool,
    /// Push this run's metrics to a Prometheus Pushgateway at the end
    /// (success or failure): the CronJob's way to be monitored.
    #[arg(long, env = "TAGSYNC_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
    /// The Pushgateway job name.
    #[arg(long, env = "TAGSYNC_PUSH_JOB", default_value = "tagsync")]
    pub push_job: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan as JSON for `tagsync apply`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Only these targets (repeatable; default all).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Plan as if --force were given (lifts the removal-ratio guard).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub feed: FeedArgs,
}

/// Where a run's feed comes from, and whether a regression is accepted
/// (`sync` and `plan`).
#[derive(Debug, Clone, Default, Args)]
pub struct FeedArgs {
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

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A 5-field cron expression, exactly as in a Kubernetes CronJob.
    #[arg(long, env = "TAGSYNC_SCHEDULE", default_value = "0 6 * * 1")]
    pub schedule: String,
    /// IANA time zone of the schedule.
    #[arg(long, env = "TAGSYNC_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "TAGSYNC_LISTEN", default_value = "0.0.0.0:9464")]
    pub listen: std::net::SocketAddr,
    /// Run once at start, then on the schedule.
    #[arg(long, env = "TAGSYNC_RUN_AT_START")]
    pub run_at_start: bool,
    /// Each run starts a random time up to this after its slot.
    #[arg(long, env = "TAGSYNC_JITTER", default_value = "10m")]
    pub jitter: humantime::Duration,
    /// First wait before retrying a failed run; doubles on each retry, and
    /// never reaches past the next slot.
    #[arg(long, default_value = "5m")]
    pub retry_backoff: humantime::Duration,
    /// Retries of a failed run before waiting for the next slot.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Between runs, how often notifications that a receiver did not
    /// accept are retried (each event backs off from 30s to an hour).
    #[arg(long, default_value = "30s")]
    pub redeliver_every: humantime::Duration,
    /// /readyz fails when the last run is older than this many schedule
    /// intervals.
    #[arg(long, default_value_t = 2)]
    pub ready_factor: u32,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved by `tagsync plan --out`.
    pub plan: PathBuf,
    /// Only these targets of the plan (repeatable; default all).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The target to return.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// The apply id (from `tagsync history --target NAME`) whose owned rules
    /// to return to.
    #[arg(long, value_name = "APPLY_ID")]
    pub to: i64,
    /// Show the rollback's plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Lift the max_removal_ratio guard.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `{target, kind, resource_id, change_number, rules, foreign}`.
    Json,
    /// A `.tfvars` file with the map variable `tagsync_ip_rules`.
    Terraform,
    /// A `.bicepparam` file with the object parameter `tagsyncIpRules`.
    Bicep,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["targets", "all"])))]
pub struct ExportArgs {
    /// Export this target (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Export every configured target.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
    pub format: ExportFormat,
    /// The template a Bicep parameters file is `using`.
    #[arg(long, value_name = "PATH", default_value = "./main.bicep")]
    pub bicep_template: String,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub feed: FeedArgs,
}

#[derive(Debug, Subcommand)]
pub enum TargetsCommand {
    /// Per target: access works, resource found, tier supports IP rules,
    /// current rules, capacity, warnings.
    Check(TargetsCheckArgs),
    /// Take over rules as owned (default: live rules that are desired).
    Adopt(OwnershipArgs),
    /// Forget owned rules (default: all of the target's), leaving them in place.
    Release(OwnershipArgs),
}

#[derive(Debug, Args)]
pub struct TargetsCheckArgs {
    /// Only these targets (repeatable; default all).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OwnershipArgs {
    /// The target's name.
    pub name: String,
    /// Prefixes (default: see the command).
    pub prefixes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// A tag's prefixes, counts and changeNumber.
    Show(FeedShowArgs),
    /// A tag's regional sub-tags, and its prefixes that no sub-tag carries.
    Regions(FeedRegionsArgs),
}

#[derive(Debug, Args)]
pub struct FeedRegionsArgs {
    /// The global tag.
    #[arg(long, value_name = "TAG", default_value = "AzureDigitalTwins")]
    pub tag: String,
    /// Read the feed from this file instead of the configured source.
    #[arg(long, value_name = "FILE")]
    pub feed_file: Option<PathBuf>,
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
    #[arg(long, value_name = "TAG", conflicts_with = "target")]
    pub tag: Option<String>,
    /// The applies to this target instead of the feed runs.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
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
