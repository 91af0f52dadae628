//! Runs a parsed command: builds the settings, does the work, renders the
//! result on stdout and maps errors to exit codes. Logs go to stderr.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::cli::{
    Cli, Command, ConfigCommand, DiffArgs, FeedCommand, FeedShowArgs, HistoryArgs, LogFormat,
    OutputFormat, SyncArgs,
};
use crate::config::{ConfigFile, Settings, SourceKind};
use crate::error::{Error, exit};
use crate::feed::source::{self, Content};
use crate::history::{History, RunLock};
use crate::http::HttpClient;
use crate::prefix::PrefixSet;
use crate::render;
use crate::sync::{SyncOptions, run_feed};

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second initialisation (tests calling in-process) is harmless.
    let _ = match cli.log_format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs one parsed command; returns the exit code on success.
pub async fn run(cli: Cli) -> Result<u8, Error> {
    match &cli.command {
        Command::Sync(args) => sync(&cli, args).await,
        Command::Feed(FeedCommand::Show(args)) => feed_show(&cli, args).await,
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

fn feed_override(
    file: &mut ConfigFile,
    feed_file: Option<&std::path::PathBuf>,
    feed_url: Option<&String>,
) {
    if let Some(path) = feed_file {
        file.feed.source = SourceKind::File;
        file.feed.file = Some(path.clone());
    }
    if let Some(url) = feed_url {
        file.feed.source = SourceKind::Url;
        file.feed.url = Some(url.clone());
    }
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
        OutputFormat::Human => human(value),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a non-zero exit.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

async fn sync(cli: &Cli, args: &SyncArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| {
        feed_override(f, args.feed_file.as_ref(), args.feed_url.as_ref())
    })?;
    let _lock = RunLock::acquire(&settings.db_path, settings.lock_timeout)?;
    let history = History::open(&settings.db_path, true).await?;
    let http =
        HttpClient::new(settings.http.clone()).map_err(|e| Error::Internal(e.to_string()))?;
    let opts = SyncOptions {
        allow_regression: args.allow_regression,
    };
    let result = run_feed(&settings, &history, &http, &opts).await;
    history.close().await;
    let run = result?;
    let report = render::SyncReport::new(&run);
    emit(cli.output, &report, render::sync_human)?;
    Ok(exit::OK)
}

async fn feed_show(cli: &Cli, args: &FeedShowArgs) -> Result<u8, Error> {
    let settings = settings(cli, |f| feed_override(f, args.feed_file.as_ref(), None))?;
    let selection = if args.tags.is_empty() {
        settings.selection.clone()
    } else {
        crate::tags::TagSelection::new(args.tags.clone(), Vec::new())
    };
    let content = match &settings.source {
        // The common offline case streams the file without a digest.
        crate::config::SourceSpec::File(path) => Content::File(path.clone()),
        spec => {
            let http = HttpClient::new(settings.http.clone())
                .map_err(|e| Error::Internal(e.to_string()))?;
            source::fetch(spec, settings.cloud, &http, None)
                .await?
                .content
        }
    };
    let feed = source::scan_content(&content, settings.http.max_bytes, |n| selection.wants(n))?;
    let tags = selection.resolve(&feed)?;
    let report = render::FeedShow::new(&feed, &tags);
    emit(cli.output, &report, render::feed_show_human)?;
    Ok(exit::OK)
}

async fn history(cli: &Cli, args: &HistoryArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let history = History::open(&settings.db_path, false).await?;
    let runs = history.runs(args.tag.as_deref(), args.limit).await;
    history.close().await;
    let runs = runs?;
    emit(cli.output, &runs, |r| render::history_human(r))?;
    Ok(exit::OK)
}

async fn diff(cli: &Cli, args: &DiffArgs) -> Result<u8, Error> {
    let settings = settings(cli, |_| {})?;
    let history = History::open(&settings.db_path, false).await?;
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
        before.iter().chain(&after).map(|(n, _, _)| n).collect();
    for name in names {
        if args.tag.as_ref().is_some_and(|t| t != name) {
            continue;
        }
        let find = |set: &[(String, u64, PrefixSet)]| {
            set.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, c, p)| (*c, p.clone()))
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
