//! Runs a parsed command: builds the settings, does the work, renders the
//! result on stdout and maps errors to exit codes. Logs go to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::cli::{
    ApplyArgs, Cli, Command, ConfigCommand, DiffArgs, ExportArgs, ExportFormat, FeedArgs,
    FeedCommand, FeedRegionsArgs, FeedShowArgs, HistoryArgs, LogFormat, OutputFormat,
    OwnershipArgs, PlanArgs, RollbackArgs, SyncArgs, TargetsCheckArgs, TargetsCommand,
};
use crate::config::{ConfigFile, Settings, SourceKind};
use crate::error::{Error, exit};
use crate::export::TargetExport;
use crate::feed::source::{self, Content, SourceSpec};
use crate::history::{History, RunLock};
use crate::http::HttpClient;
use crate::prefix::PrefixSet;
use crate::reconcile::Outcome;
use crate::render;
use crate::run::{
    Mode, PLAN_FORMAT, PlanDocument, RunOptions, RunReport, arm_client, execute, push_metrics,
};

/// The whole program: parse, run, exit.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    let output = cli.output;
    // Commands that reach targets (or serve) run their requests and
    // SQLite's work side by side on two workers; the feed and history
    // commands are one sequential task, and skip starting the workers.
    let mut builder = match cli.command {
        Command::Feed(_) | Command::History(_) | Command::Diff(_) | Command::Config(_) => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return report_error(
                output,
                &Error::Internal(format!("cannot start the async runtime: {e}")),
            );
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => report_error(output, &e),
    }
}

fn report_error(output: OutputFormat, e: &Error) -> ExitCode {
    if output == OutputFormat::Json {
        let body = serde_json::json!({"error": {"kind": e.kind(), "message": e.to_string(), "exit_code": e.exit_code()}});
        println!("{body}");
    }
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,tagsync=info",
        (false, 1) => "info,tagsync=debug",
        (false, _) => "debug,tagsync=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(render::colour_wanted(std::io::stderr().is_terminal()));
    // A second initialisation (tests calling in-process) is harmless.
    let _ = match cli.log_format {
        LogFormat::Human => builder.with_target(false).try_init(),
        // Without tracing's own `target` (the module), so the tagsync
        // target's name is the only `target` key of a line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_target(false)
            .try_init(),
    };
}

/// Runs one parsed command; returns the exit code on success.
pub async fn run(cli: Cli) -> Result<u8, Error> {
    if cli.output == OutputFormat::Markdown
        && !matches!(
            cli.command,
            Command::Plan(_) | Command::Sync(_) | Command::Apply(_) | Command::Rollback(_)
        )
    {
        return Err(Error::Usage(
            "--output markdown renders plans: use it with `plan`, `sync`, `apply` or `rollback`"
                .into(),
        ));
    }
    match &cli.command {
        Command::Sync(args) => sync(&cli, args).await,
        Command::Plan(args) => plan_cmd(&cli, args).await,
        Command::Apply(args) => apply_cmd(&cli, args).await,
        Command::Rollback(args) => rollback_cmd(&cli, args).await,
        Command::Export(args) => export_cmd(&cli, args).await,
        Command::Daemon(args) => daemon_cmd(&cli, args).await,
        Command::Targets(TargetsCommand::Check(args)) => targets_check(&cli, args).await,
        Command::Targets(TargetsCommand::Adopt(args)) => targets_adopt(&cli, args).await,
        Command::Targets(TargetsCommand::Release(args)) => targets_release(&cli, args).await,
        Command::Feed(FeedCommand::Show(args)) => feed_show(&cli, args).await,
        Command::Feed(FeedCommand::Regions(args)) => feed_regions(&cli, args).await,
        Command::History(args) => history(&cli, args).await,
        Command::Diff(args) => diff(&cli, args).await,
        Command::Config(ConfigCommand::Check) => config_check(&cli),
    }
}

/// Builds validated settings: file (or defaults), then environment, then
/// flags (`adjust` applies command flags).
fn settings(cli: &Cli, adjust: impl FnOnce(&mut ConfigFile)) -> Result<Settings, Error> {
    let mut file = match &cli.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    file.apply_env(|k| std::env::var(k).ok())?;
    if let Some(db) = &cli.db {
        file.database.path = db.clone();
    }
    adjust(&mut file);
    Ok(file.validate()?)
}

fn feed_override(file: &mut ConfigFile, feed: &FeedArgs) {
    if let Some(path) = &feed.feed_file {
        file.feed.source = SourceKind::File;
        file.feed.file = Some(path.clone());
    }
    if let Some(url) = &feed.feed_url {
        file.feed.source = SourceKind::Url;
        file.feed.url = Some(url.clone());
    }
}

/// Only `--feed-file`, for the commands that read a feed without
/// recording it.
fn feed_file_override(file: &mut ConfigFile, path: Option<&std::path::PathBuf>) {
    feed_override(
        file,
        &FeedArgs {
            feed_file: path.cloned(),
            ..FeedArgs::default()
        },
    );
}

/// Writes text to stdout; a closed pipe is not an error.
fn print_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn emit<T: Serialize>(
    output: OutputFormat,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<(), Error> {
    let text = match output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))? + "\n"
        }
        // Commands that render Markdown answer before reaching here.
        OutputFormat::Human | OutputFormat::Markdown => {
            let text = human(value);
            if render::colour_wanted(std::io::stdout().is_terminal()) {
                render::paint(&text)
            } else {
                text
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a non-zero exit.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

async fn sync(cli: &Cli, args: &SyncArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_override(f, &args.feed))?;
    let stop = crate::run::stop_on_signal();
    let opts = RunOptions {
        allow_regression: args.feed.allow_regression,
        force: args.force,
        targets: args.targets.clone(),
        stop: Some(stop.clone()),
    };
    let mode = if args.dry_run {
        Mode::Plan
    } else {
        Mode::Apply
    };
    let result = execute(&settings, &mode, &opts).await;
    if let Some(url) = &args.pushgateway {
        push_metrics(&settings, url, &args.push_job).await;
    }
    let run = result?;
    let report = sync_report(&run)?;
    if cli.output == OutputFormat::Markdown {
        print_text(&render::targets_markdown(&report.targets, "sync"));
    } else {
        emit(cli.output, &report, |r| {
            render::sync_human(r, cli.verbose > 0)
        })?;
    }
    if *stop.borrow() {
        return Ok(exit::INTERRUPTED);
    }
    Ok(run.exit_code())
}

/// The `sync` output of a run that recorded the feed.
fn sync_report(run: &RunReport) -> Result<render::SyncReport, Error> {
    let feed = run
        .feed
        .as_ref()
        .ok_or_else(|| Error::Internal("a feed run reported no feed".into()))?;
    let mut report = render::SyncReport::new(feed);
    report.targets = run.reports();
    Ok(report)
}

async fn daemon_cmd(cli: &Cli, args: &crate::cli::DaemonArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let schedule =
        crate::daemon::Schedule::parse(&args.schedule, &args.time_zone).map_err(Error::Usage)?;
    let day = std::time::Duration::from_secs(86_400);
    if Duration::from(args.jitter) > day || Duration::from(args.retry_backoff) > day {
        return Err(Error::Usage(
            "--jitter and --retry-backoff must be at most 24h".into(),
        ));
    }
    if args.retries > 100 || !(1..=100).contains(&args.ready_factor) {
        return Err(Error::Usage(
            "--retries must be 0 to 100 and --ready-factor 1 to 100".into(),
        ));
    }
    // Fail at start, not at the first slot, when the database is unusable;
    // and serve the history's last values from the first scrape on.
    let history = History::open(&settings.db_path, true).await?;
    crate::run::seed_metrics(&settings, &history).await;
    history.close().await;
    let opts = crate::daemon::DaemonOptions {
        schedule,
        listen: args.listen,
        run_at_start: args.run_at_start,
        jitter: args.jitter.into(),
        retry_backoff: args.retry_backoff.into(),
        retries: args.retries,
        ready_factor: args.ready_factor,
        redeliver_every: Duration::from(args.redeliver_every).max(Duration::from_millis(100)),
    };
    crate::daemon::run(settings, opts).await
}

async fn plan_cmd(cli: &Cli, args: &PlanArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_override(f, &args.feed))?;
    let opts = RunOptions {
        allow_regression: args.feed.allow_regression,
        force: args.force,
        targets: args.targets.clone(),
        stop: None,
    };
    let run = execute(&settings, &Mode::Plan, &opts).await?;
    let feed = sync_report(&run)?;
    let doc = PlanDocument {
        format: PLAN_FORMAT,
        created_at: crate::history::now(),
        run_id: feed.run_id,
        change_number: feed.feed.change_number,
        targets: run.reports(),
    };
    if let Some(path) = &args.out {
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| {
            Error::Usage(format!("cannot write the plan to {}: {e}", path.display()))
        })?;
        eprintln!(
            "saved the plan to {0}; apply it with `tagsync apply {0}`",
            path.display()
        );
    }
    if cli.output == OutputFormat::Markdown {
        print_text(&render::targets_markdown(&doc.targets, "plan"));
        return Ok(run.exit_code());
    }
    emit(cli.output, &doc, |d| {
        if d.targets.is_empty() {
            // No targets: the feed summary is the whole plan.
            render::sync_human(&feed, cli.verbose > 0)
        } else {
            render::targets_human(&d.targets, cli.verbose > 0)
        }
    })?;
    Ok(run.exit_code())
}

async fn apply_cmd(cli: &Cli, args: &ApplyArgs) -> Result<u8, Error> {
    let text = std::fs::read_to_string(&args.plan)
        .map_err(|e| Error::Usage(format!("cannot read the plan {}: {e}", args.plan.display())))?;
    let doc: PlanDocument = serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{} is not a plan saved by `tagsync plan --out`: {e}",
            args.plan.display()
        ))
    })?;
    if doc.format != PLAN_FORMAT {
        return Err(Error::Usage(format!(
            "the plan {} has format {}, this tagsync reads format {PLAN_FORMAT}; make a new plan",
            args.plan.display(),
            doc.format
        )));
    }
    let settings = settings(cli, |_| {})?;
    let stop = crate::run::stop_on_signal();
    let opts = RunOptions {
        targets: args.targets.clone(),
        stop: Some(stop.clone()),
        ..RunOptions::default()
    };
    let run = execute(&settings, &Mode::ApplySaved(doc), &opts).await?;
    targets_result(cli, &run, "apply", &stop)
}

/// Prints the targets of a run that wrote (`apply`, `rollback`) and gives
/// its exit code: 7 when a signal stopped it.
fn targets_result(
    cli: &Cli,
    run: &RunReport,
    command: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<u8, Error> {
    let reports = run.reports();
    if cli.output == OutputFormat::Markdown {
        print_text(&render::targets_markdown(&reports, command));
    } else {
        emit(cli.output, &reports, |r| {
            render::targets_human(r, cli.verbose > 0)
        })?;
    }
    if *stop.borrow() {
        return Ok(exit::INTERRUPTED);
    }
    Ok(run.exit_code())
}

async fn rollback_cmd(cli: &Cli, args: &RollbackArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let stop = crate::run::stop_on_signal();
    let opts = RunOptions {
        force: args.force,
        targets: vec![args.target.clone()],
        stop: Some(stop.clone()),
        ..RunOptions::default()
    };
    let mode = Mode::Rollback {
        to: args.to,
        dry_run: args.dry_run,
    };
    let run = execute(&settings, &mode, &opts).await?;
    let command = if args.dry_run {
        "rollback --dry-run"
    } else {
        "rollback"
    };
    targets_result(cli, &run, command, &stop)
}

async fn export_cmd(cli: &Cli, args: &ExportArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_override(f, &args.feed))?;
    if args.all && settings.targets.is_empty() {
        return Err(Error::Usage(
            "no targets are configured: add [[targets]] to the configuration".into(),
        ));
    }
    let opts = RunOptions {
        allow_regression: args.feed.allow_regression,
        targets: args.targets.clone(),
        ..RunOptions::default()
    };
    let run = execute(&settings, &Mode::Plan, &opts).await?;
    let change_number = run.feed.as_ref().and_then(|f| f.feed.change_number);
    let exports: Vec<TargetExport> = run
        .targets
        .iter()
        .map(|t| TargetExport::new(&t.report, &settings, change_number))
        .collect();
    let text = match args.format {
        ExportFormat::Json => {
            let value = match exports.as_slice() {
                [one] if !args.all => serde_json::to_value(one),
                many => serde_json::to_value(many),
            }
            .map_err(|e| Error::Internal(e.to_string()))?;
            serde_json::to_string_pretty(&value).map_err(|e| Error::Internal(e.to_string()))? + "\n"
        }
        ExportFormat::Terraform => crate::export::terraform(&exports),
        ExportFormat::Bicep => crate::export::bicep(&exports, &args.bicep_template),
    };
    for e in exports.iter().filter(|e| e.error.is_some()) {
        eprintln!(
            "error: target {} not exported ({}): {}",
            e.target,
            e.outcome.as_str(),
            e.error.as_deref().unwrap_or_default()
        );
    }
    match &args.out {
        Some(path) => write_atomically(path, &text)?,
        None => print_text(&text),
    }
    Ok(run.exit_code())
}

/// Writes a file whole or not at all: a pipeline never reads half an export.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tagsync-tmp"));
    let fail = |e: std::io::Error| Error::Usage(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

async fn targets_check(cli: &Cli, args: &TargetsCheckArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let opts = RunOptions {
        targets: args.targets.clone(),
        ..RunOptions::default()
    };
    let run = execute(&settings, &Mode::Check, &opts).await?;
    let mut checks = Vec::new();
    for t in &run.targets {
        let target = settings
            .targets
            .iter()
            .find(|s| s.name == t.report.name)
            .ok_or_else(|| Error::Internal(format!("no target `{}`", t.report.name)))?;
        checks.push(render::TargetCheck::new(target, t));
    }
    emit(cli.output, &checks, |c| render::checks_human(c))?;
    Ok(
        if checks
            .iter()
            .all(|c| c.error.is_none() && c.unsupported.is_none())
        {
            exit::OK
        } else {
            exit::TARGET_FAILED
        },
    )
}

async fn targets_adopt(cli: &Cli, args: &OwnershipArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let given = if args.prefixes.is_empty() {
        None
    } else {
        Some(parse_prefix_args(&args.prefixes).map_err(Error::Usage)?)
    };
    let opts = RunOptions {
        targets: vec![args.name.clone()],
        ..RunOptions::default()
    };
    let run = execute(&settings, &Mode::Adopt(given), &opts).await?;
    let t = run
        .targets
        .first()
        .ok_or_else(|| Error::Usage(format!("no target named `{}`", args.name)))?;
    if t.report.outcome == Outcome::Failed {
        return Err(Error::Azure(format!(
            "target `{}`: {}",
            args.name,
            t.report.error.as_deref().unwrap_or("failed")
        )));
    }
    let adopted = &t.adopted;
    let report = serde_json::json!({"target": args.name, "adopted": adopted});
    emit(cli.output, &report, |_| {
        format!(
            "target {}: adopted {} rules\n{}",
            args.name,
            adopted.len(),
            adopted.to_lines() + if adopted.is_empty() { "" } else { "\n" }
        )
    })?;
    Ok(exit::OK)
}

/// Parses prefixes given on the command line.
fn parse_prefix_args(args: &[String]) -> Result<PrefixSet, String> {
    args.iter()
        .map(|a| {
            crate::prefix::parse_prefix(a)
                .map(|(n, _)| n)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(PrefixSet::from_nets)
}

async fn targets_release(cli: &Cli, args: &OwnershipArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let _lock = RunLock::acquire(&settings.db_path, settings.lock_timeout)?;
    let history = History::open(&settings.db_path, true).await?;
    let prefixes = if args.prefixes.is_empty() {
        None
    } else {
        Some(parse_prefix_args(&args.prefixes).map_err(Error::Usage)?)
    };
    let result = history.release(&args.name, prefixes.as_ref()).await;
    history.close().await;
    let released = result?;
    let report = serde_json::json!({"target": args.name, "released": released});
    emit(cli.output, &report, |_| {
        format!(
            "target {}: released {released} rules (they stay on the resource, now foreign)\n",
            args.name
        )
    })?;
    Ok(exit::OK)
}

async fn feed_show(cli: &Cli, args: &FeedShowArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_file_override(f, args.feed_file.as_ref()))?;
    let selection = if args.tags.is_empty() {
        settings.selection.clone()
    } else {
        crate::tags::TagSelection::new(args.tags.clone(), Vec::new())
    };
    let content = fetch_content(&settings).await?;
    let feed = source::scan_content(&content, settings.http.max_bytes, |n| selection.wants(n))?;
    let tags = selection.resolve(&feed)?;
    let report = render::FeedShow::new(&feed, &tags);
    emit(cli.output, &report, render::feed_show_human)?;
    Ok(exit::OK)
}

/// The feed's content from the configured source, without recording it.
async fn fetch_content(settings: &Settings) -> Result<Content, Error> {
    Ok(match &settings.source {
        // The common offline case streams the file without a digest.
        SourceSpec::File(path) => Content::File(path.clone()),
        spec => {
            let http = HttpClient::new(settings.http.clone());
            let arm = match spec {
                SourceSpec::DiscoveryApi { .. } => Some(arm_client(settings)?),
                _ => None,
            };
            source::fetch(spec, settings.cloud, &http, arm.as_ref(), None)
                .await?
                .content
        }
    })
}

async fn feed_regions(cli: &Cli, args: &FeedRegionsArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_file_override(f, args.feed_file.as_ref()))?;
    let content = fetch_content(&settings).await?;
    let prefix = format!("{}.", args.tag);
    let feed = source::scan_content(&content, settings.http.max_bytes, |n| {
        n == args.tag || n.starts_with(&prefix)
    })?;
    let global = feed.tag(&args.tag)?;
    let subtags = crate::tags::regional_subtags(&feed, &args.tag)?;
    let report = render::Regions::new(&feed, &global, &subtags);
    emit(cli.output, &report, render::regions_human)?;
    Ok(exit::OK)
}

async fn history(cli: &Cli, args: &HistoryArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let history = History::open_read_only(&settings.db_path).await?;
    if let Some(target) = &args.target {
        let applies = history.applies(target, args.limit).await;
        history.close().await;
        let applies = applies?;
        emit(cli.output, &applies, |a| render::applies_human(target, a))?;
        return Ok(exit::OK);
    }
    let runs = history.runs(args.tag.as_deref(), args.limit).await;
    history.close().await;
    let runs = runs?;
    emit(cli.output, &runs, |r| render::history_human(r))?;
    Ok(exit::OK)
}

async fn diff(cli: &Cli, args: &DiffArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let history = History::open_read_only(&settings.db_path).await?;
    let result = diff_runs(&history, args).await;
    history.close().await;
    let report = result?;
    emit(cli.output, &report, render::diff_human)?;
    Ok(exit::OK)
}

async fn diff_runs(history: &History, args: &DiffArgs) -> Result<render::Diff, Error> {
    let from = run_ref(history, &args.from).await?;
    let to = run_ref(history, &args.to).await?;
    let before = history.run_snapshots(from).await?;
    let after = history.run_snapshots(to).await?;
    let mut tags = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        before.iter().chain(&after).map(|t| &t.name).collect();
    for name in names {
        if args.tag.as_ref().is_some_and(|t| t != name) {
            continue;
        }
        let find = |set: &[crate::tags::TagState]| {
            set.iter()
                .find(|t| &t.name == name)
                .map(|t| (t.change_number, t.prefixes.clone()))
        };
        tags.push(render::TagDiff::new(name, find(&before), find(&after)));
    }
    if let Some(tag) = &args.tag
        && tags.is_empty()
    {
        return Err(Error::Usage(format!(
            "neither run {from} nor run {to} recorded tag `{tag}`; `tagsync history --tag {tag}` lists the runs that did"
        )));
    }
    Ok(render::Diff { from, to, tags })
}

async fn run_ref(history: &History, s: &str) -> Result<i64, Error> {
    if s == "latest" {
        return history.latest_snapshot_run().await?.ok_or_else(|| {
            Error::Usage("the history has no snapshots yet; run `tagsync sync` first".into())
        });
    }
    s.parse().map_err(|_| {
        Error::Usage(format!(
            "`{s}` is not a run id; use a number from `tagsync history` or `latest`"
        ))
    })
}

fn config_check(cli: &Cli) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let report = render::ConfigReport::new(cli.config.as_deref(), &settings);
    emit(cli.output, &report, render::config_human)?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;

    /// Every variable a flag reads (clap's `env`), in every subcommand.
    fn flag_variables(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env() {
                out.insert(var.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            flag_variables(sub, out);
        }
    }

    #[test]
    fn readme_environment_table_is_exactly_what_the_flags_and_the_config_read() {
        let mut read = BTreeSet::new();
        flag_variables(&Cli::command(), &mut read);
        let asked = std::cell::RefCell::new(Vec::new());
        ConfigFile::default()
            .apply_env(|k| {
                asked.borrow_mut().push(k.to_owned());
                None
            })
            .expect("no variable set");
        read.extend(asked.into_inner());
        let readme = include_str!("../README.md");
        let table: BTreeSet<String> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `TAGSYNC_"))
            .filter_map(|l| l.split('`').next())
            .map(|v| format!("TAGSYNC_{v}"))
            .collect();
        assert!(read.len() > 20, "{read:?}");
        assert_eq!(
            table, read,
            "the README's environment table must list exactly the variables tagsync reads"
        );
    }
}
