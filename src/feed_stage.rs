//! The feed stage of a run: fetch the feed, validate it, select the tags,
//! record the run.
//!
//! A failure at any step is recorded as a failed run and leaves every
//! earlier snapshot as it was.

use crate::azure::arm::ArmClient;
use crate::config::Settings;
use crate::error::Error;
use crate::feed::ServiceTag;
use crate::feed::source::{self, Content, PreviousDownload};
use crate::history::{History, NewRun, RecordedRun};
use crate::http::{HttpClient, Validators};
use crate::notify::Notifier;
use crate::tags::TagState;

/// Facts about the feed a run used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedInfo {
    pub source: String,
    pub location: String,
    pub found_by: String,
    pub cloud: String,
    pub change_number: Option<u64>,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub tag_count: Option<usize>,
    /// The server answered 304: the last downloaded file is unchanged.
    pub not_modified: bool,
}

/// The result of a successful run.
#[derive(Debug, Clone)]
pub struct FeedRun {
    pub feed: FeedInfo,
    pub recorded: RecordedRun,
    pub warnings: Vec<String>,
    pub pruned_runs: u64,
}

/// Fetches, validates, selects and records. On error the failure has been
/// recorded (when the database works) and is returned. `allow_regression`
/// accepts a feed whose changeNumber is lower than the last recorded one.
pub async fn run_feed(
    settings: &Settings,
    history: &History,
    http: &HttpClient,
    arm: Option<&ArmClient>,
    notifier: &Notifier,
    allow_regression: bool,
) -> Result<FeedRun, Error> {
    let mut run = NewRun {
        started_at: crate::history::now(),
        source: settings.source.name().to_owned(),
        cloud: settings.cloud.feed_name().to_owned(),
        allow_regression,
        selection: selection_json(settings),
        ..NewRun::default()
    };
    let fetch_started = std::time::Instant::now();
    match fetch_and_select(settings, history, http, arm, allow_regression, &mut run).await {
        Ok((feed, tags, warnings)) => {
            let m = crate::metrics::metrics();
            m.feed_download_duration
                .set(fetch_started.elapsed().as_secs_f64());
            // A change's event is recorded with the run itself.
            let events = |run_id, changes: &[crate::history::TagChange]| {
                notifier.feed_changed(run_id, &run.cloud, feed.change_number, changes)
            };
            let recorded = history.record_success(&run, &tags, &events).await?;
            tracing::info!(
                run_id = recorded.run_id,
                changed = recorded.changed,
                change_number = feed.change_number,
                tags = recorded.tags.len(),
                "recorded the run"
            );
            record_feed_metrics(history, &run.cloud, &feed, &recorded).await;
            let pruned_runs = match settings.retention {
                Some(retention) => history.prune(retention).await?,
                None => 0,
            };
            Ok(FeedRun {
                feed,
                recorded,
                warnings,
                pruned_runs,
            })
        }
        Err(e) => {
            let id = history
                .record_failure(&run, e.kind(), &e.to_string())
                .await?;
            tracing::info!(run_id = id, kind = e.kind(), "recorded the failed run");
            Err(e)
        }
    }
}

async fn record_feed_metrics(
    history: &History,
    cloud: &str,
    feed: &FeedInfo,
    recorded: &RecordedRun,
) {
    let m = crate::metrics::metrics();
    if let Some(cn) = feed.change_number {
        m.feed_change_number.set(cn as i64);
        if let Ok(Some(first)) = history.first_seen(cloud, cn).await
            && let Ok(t) =
                time::OffsetDateTime::parse(&first, &time::format_description::well_known::Rfc3339)
        {
            m.set_feed_first_seen(t.unix_timestamp() as f64);
        }
    }
    if let Some(bytes) = feed.bytes {
        m.feed_bytes.set(bytes as i64);
    }
    for change in &recorded.tags {
        let t = &change.state;
        m.tag_prefixes
            .with_label_values(&[t.name.as_str(), "ipv4"])
            .set(t.prefixes.v4().len() as i64);
        m.tag_prefixes
            .with_label_values(&[t.name.as_str(), "ipv6"])
            .set(t.prefixes.v6().len() as i64);
        m.tag_change_number
            .with_label_values(&[t.name.as_str()])
            .set(t.change_number as i64);
    }
}

/// Every selection the run must resolve: the global one and each target's.
fn selections(settings: &Settings) -> Vec<&crate::tags::TagSelection> {
    std::iter::once(&settings.selection)
        .chain(settings.targets.iter().map(|t| &t.selection))
        .collect()
}

fn selection_json(settings: &Settings) -> String {
    let all: Vec<serde_json::Value> = selections(settings)
        .iter()
        .map(|s| serde_json::json!({"tags": s.tags, "regions": s.regions, "include_unassigned": s.include_unassigned}))
        .collect();
    serde_json::Value::Array(all).to_string()
}

async fn fetch_and_select(
    settings: &Settings,
    history: &History,
    http: &HttpClient,
    arm: Option<&ArmClient>,
    allow_regression: bool,
    run: &mut NewRun,
) -> Result<(FeedInfo, Vec<TagState>, Vec<String>), Error> {
    let last = history.last_good_run(&run.cloud).await?;
    let previous = last.as_ref().and_then(|l| {
        Some(PreviousDownload {
            url: l.feed_location.clone()?,
            validators: Validators {
                etag: l.etag.clone(),
                last_modified: l.last_modified.clone(),
            },
        })
    });
    let mut fetched = source::fetch(
        &settings.source,
        settings.cloud,
        http,
        arm,
        previous.as_ref(),
    )
    .await?;
    run.feed_location = Some(fetched.location.clone());
    run.found_by = Some(fetched.found_by.clone());

    if matches!(fetched.content, Content::NotModified) {
        // The file is the one the last good run used. Reuse its snapshots when
        // that run followed the same selection; otherwise download it again.
        if let Some(last) = last.as_ref().filter(|l| l.selection == run.selection) {
            let recorded = match history.run_snapshots(last.id).await {
                Ok(tags) => Some(tags),
                Err(crate::history::HistoryError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(tags) = recorded {
                tracing::info!(url = %fetched.location, "the feed is unchanged since the last run (HTTP 304)");
                run.not_modified = true;
                run.change_number = last.change_number;
                run.feed_sha256 = last.feed_sha256.clone();
                run.etag = fetched.validators.etag.clone();
                run.last_modified = fetched.validators.last_modified.clone();
                let feed = FeedInfo {
                    source: run.source.clone(),
                    location: fetched.location.clone(),
                    found_by: fetched.found_by.clone(),
                    cloud: run.cloud.clone(),
                    change_number: last.change_number,
                    sha256: last.feed_sha256.clone(),
                    bytes: None,
                    tag_count: None,
                    not_modified: true,
                };
                return Ok((feed, tags, Vec::new()));
            }
        }
        fetched = source::fetch(&settings.source, settings.cloud, http, arm, None).await?;
        run.feed_location = Some(fetched.location.clone());
        run.found_by = Some(fetched.found_by.clone());
    }

    let selections = selections(settings);
    let loaded = source::load(&fetched.content, settings.http.max_bytes, |n| {
        selections.iter().any(|s| s.wants(n))
    })?
    .ok_or_else(|| Error::Internal("the server answered 304 to an unconditional request".into()))?;
    tracing::debug!(
        location = %fetched.location,
        bytes = loaded.bytes,
        change_number = loaded.feed.change_number,
        tags = loaded.feed.tag_names.len(),
        "read the feed"
    );
    run.feed_sha256 = Some(loaded.sha256.clone());
    run.feed_bytes = Some(loaded.bytes);
    run.change_number = Some(loaded.feed.change_number);
    run.etag = fetched.validators.etag.clone();
    run.last_modified = fetched.validators.last_modified.clone();

    loaded.feed.check_cloud(settings.cloud)?;
    if let Some(prev) = last.as_ref().and_then(|l| l.change_number) {
        let current = loaded.feed.change_number;
        if current < prev {
            if allow_regression {
                tracing::warn!(
                    current,
                    previous = prev,
                    "accepting a feed whose changeNumber went back (--allow-regression)"
                );
            } else {
                return Err(Error::Refused(format!(
                    "its changeNumber {current} is lower than {prev}, recorded by run {}; it is probably a stale mirror or a lagging API. \
                     Check the source, or pass --allow-regression to accept it once",
                    last.as_ref().map_or(0, |l| l.id)
                )));
            }
        }
    }
    // The scanner kept only the tags some selection wants: parse each once,
    // then resolve every selection (the global one and each target's, often
    // the same) over them, and record each tag once.
    let parsed: Vec<ServiceTag> = loaded
        .feed
        .kept
        .iter()
        .map(|(name, _)| loaded.feed.tag(name))
        .collect::<Result<_, _>>()?;
    let mut used = std::collections::BTreeSet::new();
    for selection in &selections {
        for tag in selection.resolve_parsed(&loaded.feed, &parsed)? {
            used.insert(tag.name.as_str());
        }
    }
    let mut tags: Vec<ServiceTag> = parsed
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warnings = Vec::new();
    for tag in &tags {
        if tag.prefixes.is_empty() {
            return Err(Error::Refused(format!(
                "service tag `{}` lists no prefixes; an empty rule set would open firewalls, so this feed is not used",
                tag.name
            )));
        }
        tag.check_bounds(settings.prefix_bounds)?;
        for n in &tag.normalized {
            let w = format!(
                "service tag `{}`: prefix `{}` has host bits set; using {}",
                tag.name, n.input, n.network
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    let feed = FeedInfo {
        source: run.source.clone(),
        location: fetched.location.clone(),
        found_by: fetched.found_by.clone(),
        cloud: loaded.feed.cloud.clone(),
        change_number: Some(loaded.feed.change_number),
        sha256: Some(loaded.sha256),
        bytes: Some(loaded.bytes),
        tag_count: Some(loaded.feed.tag_names.len()),
        not_modified: false,
    };
    Ok((
        feed,
        tags.into_iter().map(TagState::from).collect(),
        warnings,
    ))
}
