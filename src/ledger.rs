//! The ownership ledger and the record of applies, in the history database.
//!
//! Ownership is explicit: a rule is tagsync's only if tagsync wrote it (or
//! it was adopted). It is never inferred from "currently in the tag".

use ipnet::IpNet;
use sqlx::Row;

use crate::history::{History, HistoryError, now};
use crate::plan::{Ledger, Owned};
use crate::prefix::PrefixSet;
use crate::targets::TargetSpec;

/// One apply, as listed by `tagsync history --target`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyEntry {
    pub apply_id: i64,
    pub run_id: Option<i64>,
    pub resource_id: String,
    pub started_at: String,
    /// `applied`, `unchanged`, `refused` or `failed`.
    pub outcome: String,
    pub guard: Option<String>,
    pub error: Option<String>,
    /// IP rules before and after (counts).
    pub rules_before: usize,
    pub rules_after: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub drift: Vec<String>,
    /// Consecutive unchanged runs this entry stands for (1 for any other).
    pub repeats: i64,
    /// When the last of them finished.
    pub finished_at: String,
}

/// A change to a target's ownership ledger.
#[derive(Debug, Clone, Default)]
pub struct LedgerChange {
    pub added: PrefixSet,
    pub removed: PrefixSet,
    pub desired: PrefixSet,
    /// Taken over with `targets adopt` rather than written.
    pub adopted: bool,
}

/// One apply, as recorded.
#[derive(Debug, Clone, Default)]
pub struct ApplyRecord {
    pub run_id: Option<i64>,
    pub started_at: String,
    pub outcome: String,
    pub guard: Option<String>,
    pub error: Option<String>,
    pub rules_before: PrefixSet,
    pub rules_after: PrefixSet,
    pub added: PrefixSet,
    pub removed: PrefixSet,
    pub drift: PrefixSet,
}

/// What the history says about the last runs, for the metrics of a fresh
/// process (every CronJob run is one, and so is every daemon restart).
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub last_run: Option<String>,
    /// The last run whose feed stage succeeded and whose targets all did.
    pub last_success: Option<String>,
    /// Per target: (outcome, when it last had it).
    pub last_applies: Vec<(String, String, String)>,
    /// Per target: the IP rules after its last apply, and how many it owns.
    pub rules: Vec<(String, usize, usize)>,
}

impl History {
    /// The metric values a new process starts from (see [`Recovered`]).
    pub async fn recovered(&self) -> Result<Recovered, HistoryError> {
        let last_run: Option<String> = sqlx::query_scalar("SELECT MAX(finished_at) FROM runs")
            .fetch_one(self.pool())
            .await
            .map_err(|e| self.query_err(e))?;
        let last_success: Option<String> = sqlx::query_scalar(
            "SELECT MAX(r.finished_at) FROM runs r WHERE r.outcome != 'failed' AND NOT EXISTS
               (SELECT 1 FROM applies a WHERE a.run_id = r.id AND a.outcome IN ('failed', 'refused', 'drifted'))",
        )
        .fetch_one(self.pool())
        .await
        .map_err(|e| self.query_err(e))?;
        let last_applies = sqlx::query(
            "SELECT target, outcome, MAX(finished_at) FROM applies GROUP BY target, outcome",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err(e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let rules = sqlx::query(
            "SELECT a.target, a.rules_after, (SELECT COUNT(*) FROM ownership o WHERE o.target = a.target),
                    p.ipv4_count + p.ipv6_count
             FROM applies a LEFT JOIN prefix_sets p ON p.id = a.rules_after_set
             WHERE a.id IN (SELECT MAX(id) FROM applies GROUP BY target)",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err(e))?
        .iter()
        .map(|r| {
            let owned: i64 = r.get(2);
            // Rows from before the prefix-set columns keep their text.
            let after = r.get::<Option<i64>, _>(3).map_or_else(
                || {
                    r.get::<&str, _>(1)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .count()
                },
                |n| usize::try_from(n).unwrap_or(0),
            );
            (r.get(0), after, usize::try_from(owned).unwrap_or(0))
        })
        .collect();
        Ok(Recovered {
            last_run,
            last_success,
            last_applies,
            rules,
        })
    }

    fn query_err(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Query {
            path: self.path().display().to_string(),
            detail: e.to_string(),
        }
    }

    /// The ledger of a target. A target whose name now points at another
    /// resource than the one its ledger was written for is refused: the
    /// ledger describes rules on the old resource.
    pub async fn ledger(&self, target: &TargetSpec) -> Result<Ledger, HistoryError> {
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT resource_id FROM targets WHERE name = ?1")
                .bind(&target.name)
                .fetch_optional(self.pool())
                .await
                .map_err(|e| self.query_err(e))?;
        if let Some(id) = recorded
            && !target.resource.same_as(&id)
        {
            return Err(HistoryError::NotFound(format!(
                "target `{}` now names {}, but its ownership ledger was written for {id}; \
                 run `tagsync targets release {}` to forget the old ledger, or use a new target name",
                target.name, target.resource.id, target.name
            )));
        }
        self.stamped_prefixes(
            "SELECT prefix, last_desired_at FROM ownership WHERE target = ?1",
            &target.name,
        )
        .await
    }

    /// `(prefix, stamp)` rows of one target, as a ledger.
    async fn stamped_prefixes(&self, sql: &str, target: &str) -> Result<Ledger, HistoryError> {
        let rows = sqlx::query(sql)
            .bind(target)
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.query_err(e))?;
        rows.iter()
            .map(|r| {
                let prefix: &str = r.get(0);
                let net: IpNet = prefix.parse().map_err(|_| {
                    self.query_err(format!("history row `{prefix}` is not a prefix"))
                })?;
                Ok((
                    net,
                    Owned {
                        last_desired_at: r.get(1),
                    },
                ))
            })
            .collect()
    }

    /// Forgets a target's pending additions (in the caller's transaction).
    async fn clear_pending(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        target: &str,
    ) -> Result<(), HistoryError> {
        sqlx::query("DELETE FROM pending_additions WHERE target = ?1")
            .bind(target)
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| self.query_err(e))
    }

    /// Records the target (name, resource, kind) the first time it is seen.
    async fn ensure_target(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        target: &TargetSpec,
        stamp: &str,
    ) -> Result<(), HistoryError> {
        sqlx::query(
            "INSERT INTO targets (name, resource_id, kind, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&target.name)
        .bind(&target.resource.id)
        .bind(target.adapter.name())
        .bind(stamp)
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(|e| self.query_err(e))
    }

    /// Updates the ledger (adopt) in one transaction.
    pub async fn update_ledger(
        &self,
        target: &TargetSpec,
        change: &LedgerChange,
    ) -> Result<(), HistoryError> {
        let stamp = now();
        let mut tx = self.write_tx().await.map_err(|e| self.query_err(e))?;
        self.ensure_target(&mut tx, target, &stamp).await?;
        self.change_ledger(&mut tx, target, change, &stamp).await?;
        tx.commit().await.map_err(|e| self.query_err(e))
    }

    /// Applies a ledger change in the caller's transaction: `added`
    /// becomes owned, `removed` is forgotten, owned prefixes still
    /// `desired` are stamped as desired now, and the target's pending
    /// additions are settled (the write's outcome is recorded). One
    /// statement each, however many prefixes (the lists travel as JSON).
    async fn change_ledger(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        target: &TargetSpec,
        change: &LedgerChange,
        stamp: &str,
    ) -> Result<(), HistoryError> {
        let json = |set: &PrefixSet| {
            serde_json::to_string(&set.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into())
        };
        if !change.added.is_empty() {
            sqlx::query(
                "INSERT INTO ownership (target, prefix, added_at, last_desired_at, adopted)
                 SELECT ?1, value, ?3, ?3, ?4 FROM json_each(?2) WHERE true
                 ON CONFLICT (target, prefix) DO UPDATE SET last_desired_at = excluded.last_desired_at",
            )
            .bind(&target.name)
            .bind(json(&change.added))
            .bind(stamp)
            .bind(change.adopted)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.query_err(e))?;
        }
        if !change.removed.is_empty() {
            sqlx::query(
                "DELETE FROM ownership WHERE target = ?1 AND prefix IN (SELECT value FROM json_each(?2))",
            )
            .bind(&target.name)
            .bind(json(&change.removed))
            .execute(&mut **tx)
            .await
            .map_err(|e| self.query_err(e))?;
        }
        if !change.desired.is_empty() {
            sqlx::query(
                "UPDATE ownership SET last_desired_at = ?3
                 WHERE target = ?1 AND prefix IN (SELECT value FROM json_each(?2))",
            )
            .bind(&target.name)
            .bind(json(&change.desired))
            .bind(stamp)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.query_err(e))?;
        }
        self.clear_pending(tx, &target.name).await
    }

    /// Records the additions a write is about to make (write-ahead), in
    /// one transaction, before the write is sent.
    pub async fn record_pending(
        &self,
        target: &TargetSpec,
        add: &PrefixSet,
    ) -> Result<(), HistoryError> {
        let stamp = now();
        let mut tx = self.write_tx().await.map_err(|e| self.query_err(e))?;
        self.ensure_target(&mut tx, target, &stamp).await?;
        for net in add.iter() {
            sqlx::query(
                "INSERT INTO pending_additions (target, prefix, recorded_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (target, prefix) DO UPDATE SET recorded_at = excluded.recorded_at",
            )
            .bind(&target.name)
            .bind(net.to_string())
            .bind(&stamp)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.query_err(e))?;
        }
        tx.commit().await.map_err(|e| self.query_err(e))
    }

    /// The additions of writes whose outcome was never recorded, with when
    /// they were about to be made.
    pub async fn pending(&self, target: &str) -> Result<Ledger, HistoryError> {
        self.stamped_prefixes(
            "SELECT prefix, recorded_at FROM pending_additions WHERE target = ?1",
            target,
        )
        .await
    }

    /// Settles the pending additions of a target against its live rules, in
    /// one transaction: those live were written by tagsync and become owned,
    /// the others never happened and are forgotten.
    pub async fn settle_pending(
        &self,
        target: &TargetSpec,
        live: &PrefixSet,
    ) -> Result<(), HistoryError> {
        let pending = self.pending(&target.name).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await.map_err(|e| self.query_err(e))?;
        for (net, owned) in pending.iter().filter(|(n, _)| live.contains(n)) {
            sqlx::query(
                "INSERT INTO ownership (target, prefix, added_at, last_desired_at, adopted) VALUES (?1, ?2, ?3, ?3, 0)
                 ON CONFLICT (target, prefix) DO NOTHING",
            )
            .bind(&target.name)
            .bind(net.to_string())
            .bind(&owned.last_desired_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.query_err(e))?;
        }
        self.clear_pending(&mut tx, &target.name).await?;
        tx.commit().await.map_err(|e| self.query_err(e))
    }

    /// Forgets owned prefixes of a target (all of them when `prefixes` is
    /// None, and the target's record too). Returns how many were released.
    pub async fn release(
        &self,
        target: &str,
        prefixes: Option<&PrefixSet>,
    ) -> Result<u64, HistoryError> {
        let mut tx = self.write_tx().await.map_err(|e| self.query_err(e))?;
        let mut n = 0;
        match prefixes {
            Some(set) => {
                for net in set.iter() {
                    n += sqlx::query("DELETE FROM ownership WHERE target = ?1 AND prefix = ?2")
                        .bind(target)
                        .bind(net.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.query_err(e))?
                        .rows_affected();
                }
            }
            None => {
                self.clear_pending(&mut tx, target).await?;
                n = sqlx::query("DELETE FROM ownership WHERE target = ?1")
                    .bind(target)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.query_err(e))?
                    .rows_affected();
                sqlx::query("DELETE FROM targets WHERE name = ?1")
                    .bind(target)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.query_err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.query_err(e))?;
        Ok(n)
    }

    /// For each of `prefixes`, the start of the latest run whose snapshot of
    /// one of `tags` covered it (a prefix written as two addresses is
    /// covered by the /31 it came from). This is when it was last in the
    /// tag, whatever happened to the target since.
    pub async fn last_seen(
        &self,
        tags: &[String],
        prefixes: &[IpNet],
    ) -> Result<std::collections::HashMap<IpNet, String>, HistoryError> {
        let mut seen = std::collections::HashMap::new();
        if tags.is_empty() || prefixes.is_empty() {
            return Ok(seen);
        }
        let placeholders = vec!["?"; tags.len()].join(", ");
        let sql = format!(
            "SELECT p.prefixes, MAX(r.started_at) FROM snapshots s
             JOIN prefix_sets p ON p.id = s.prefix_set_id JOIN runs r ON r.id = s.run_id
             WHERE s.tag IN ({placeholders}) GROUP BY s.prefix_set_id"
        );
        let mut query = sqlx::query(&sql);
        for t in tags {
            query = query.bind(t);
        }
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.query_err(e))?;
        for row in rows {
            let set =
                PrefixSet::from_lines(row.get::<&str, _>(0)).map_err(|e| self.query_err(e))?;
            let at: String = row.get(1);
            for net in prefixes {
                if set.iter().any(|q| q.contains(net)) {
                    let entry = seen.entry(*net).or_insert_with(|| at.clone());
                    if at > *entry {
                        *entry = at.clone();
                    }
                }
            }
        }
        Ok(seen)
    }

    /// The owned rule set in force after apply `apply_id` of the target:
    /// the set recorded with it, or, for an apply that did not touch the
    /// ledger (refused, failed), the one recorded with the latest apply
    /// before it. The inner error says, for the operator, why there is none.
    pub async fn owned_at(
        &self,
        target: &TargetSpec,
        apply_id: i64,
    ) -> Result<Result<PrefixSet, String>, HistoryError> {
        let apply: Option<(String, String)> = sqlx::query_as(
            "SELECT resource_id, outcome FROM applies WHERE id = ?1 AND target = ?2",
        )
        .bind(apply_id)
        .bind(&target.name)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| self.query_err(e))?;
        let Some((resource_id, _)) = apply else {
            return Ok(Err(format!(
                "target `{}` has no apply {apply_id}; `tagsync history --target {}` lists its applies",
                target.name, target.name
            )));
        };
        if !target.resource.same_as(&resource_id) {
            return Ok(Err(format!(
                "apply {apply_id} was made on {resource_id}, and target `{}` is now {}; a rollback only returns a resource to its own rules",
                target.name, target.resource.id
            )));
        }
        let set: Option<(i64, String)> = sqlx::query_as(
            "SELECT a.id, p.prefixes FROM applies a JOIN prefix_sets p ON p.id = a.owned_set
             WHERE a.target = ?1 AND a.id <= ?2 AND a.owned_set IS NOT NULL
               AND a.resource_id = ?3 COLLATE NOCASE
             ORDER BY a.id DESC LIMIT 1",
        )
        .bind(&target.name)
        .bind(apply_id)
        .bind(&resource_id)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| self.query_err(e))?;
        let Some((_, text)) = set else {
            return Ok(Err(format!(
                "the history holds no owned rule set for target `{}` at apply {apply_id} (the apply was recorded before the history kept owned rule sets, or before tagsync owned any rule there); choose a later apply",
                target.name
            )));
        };
        let nets = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.parse::<IpNet>().map_err(|e| self.query_err(e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ok(PrefixSet::from_nets(nets)))
    }

    /// Applies of a target, newest first.
    pub async fn applies(&self, target: &str, limit: u32) -> Result<Vec<ApplyEntry>, HistoryError> {
        let rows = sqlx::query(
            "SELECT a.id, a.run_id, a.resource_id, a.started_at, a.outcome, a.guard, a.error,
                    a.rules_before, a.rules_after, a.added, a.removed, a.drift,
                    pb.ipv4_count + pb.ipv6_count, pa.ipv4_count + pa.ipv6_count,
                    a.repeats, a.finished_at
             FROM applies a
             LEFT JOIN prefix_sets pb ON pb.id = a.rules_before_set
             LEFT JOIN prefix_sets pa ON pa.id = a.rules_after_set
             WHERE a.target = ?1 ORDER BY a.id DESC LIMIT ?2",
        )
        .bind(target)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.query_err(e))?;
        let lines = |s: &str| {
            s.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        Ok(rows
            .iter()
            .map(|r| ApplyEntry {
                apply_id: r.get(0),
                run_id: r.get(1),
                resource_id: r.get(2),
                started_at: r.get(3),
                outcome: r.get(4),
                guard: r.get(5),
                error: r.get(6),
                // Rows from before the prefix-set columns keep their text.
                rules_before: r.get::<Option<i64>, _>(12).map_or_else(
                    || lines(r.get(7)).len(),
                    |n| usize::try_from(n).unwrap_or_default(),
                ),
                rules_after: r.get::<Option<i64>, _>(13).map_or_else(
                    || lines(r.get(8)).len(),
                    |n| usize::try_from(n).unwrap_or_default(),
                ),
                added: lines(r.get(9)),
                removed: lines(r.get(10)),
                drift: lines(r.get(11)),
                repeats: r.get(14),
                finished_at: r.get(15),
            })
            .collect())
    }

    /// Records a target's apply, and with `change` its ledger update, in
    /// one transaction: one synced commit per target and run. The rule
    /// sets before and after are stored prefix sets, shared by every apply
    /// (and snapshot) with the same content.
    pub async fn record_outcome(
        &self,
        target: &TargetSpec,
        change: Option<&LedgerChange>,
        rec: &ApplyRecord,
        events: &(dyn Fn(i64) -> Vec<crate::history::Outgoing> + Sync),
    ) -> Result<i64, HistoryError> {
        let stamp = now();
        let mut tx = self.write_tx().await.map_err(|e| self.query_err(e))?;
        // What tagsync owns on the target after this apply (what a rollback
        // to it returns to): only known where the ledger was read or written.
        let mut owned_set = None;
        if let Some(change) = change {
            self.ensure_target(&mut tx, target, &stamp).await?;
            self.change_ledger(&mut tx, target, change, &stamp).await?;
            let owned: Vec<String> =
                sqlx::query_scalar("SELECT prefix FROM ownership WHERE target = ?1")
                    .bind(&target.name)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.query_err(e))?;
            let owned = PrefixSet::from_nets(owned.iter().filter_map(|p| p.parse::<IpNet>().ok()));
            let owned = owned.intersection(&rec.rules_after);
            owned_set = Some(
                crate::history::store_prefix_set(&mut tx, &owned)
                    .await
                    .map_err(|e| self.query_err(e))?,
            );
        }
        let before = crate::history::store_prefix_set(&mut tx, &rec.rules_before)
            .await
            .map_err(|e| self.query_err(e))?;
        let after = if rec.rules_after == rec.rules_before {
            before
        } else {
            crate::history::store_prefix_set(&mut tx, &rec.rules_after)
                .await
                .map_err(|e| self.query_err(e))?
        };
        // Another unchanged run on the same rules extends the target's last
        // entry instead of adding one.
        if rec.outcome == "unchanged" && rec.error.is_none() && rec.guard.is_none() {
            let extended: Option<i64> = sqlx::query_scalar(
                "UPDATE applies SET run_id = ?1, finished_at = ?2, repeats = repeats + 1
                 WHERE id = (SELECT MAX(id) FROM applies WHERE target = ?3)
                   AND outcome = 'unchanged' AND error IS NULL AND guard IS NULL
                   AND resource_id = ?4 AND rules_after_set = ?5 AND rules_before_set = ?5
                   AND owned_set IS ?6
                 RETURNING id",
            )
            .bind(rec.run_id)
            .bind(&stamp)
            .bind(&target.name)
            .bind(&target.resource.id)
            .bind(after)
            .bind(owned_set)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.query_err(e))?;
            if let Some(id) = extended {
                tx.commit().await.map_err(|e| self.query_err(e))?;
                return Ok(id);
            }
        }
        let id = sqlx::query(
            "INSERT INTO applies (run_id, target, resource_id, started_at, finished_at, outcome, guard, error,
                 rules_before_set, rules_after_set, added, removed, drift, owned_set)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(rec.run_id)
        .bind(&target.name)
        .bind(&target.resource.id)
        .bind(&rec.started_at)
        .bind(&stamp)
        .bind(&rec.outcome)
        .bind(&rec.guard)
        .bind(&rec.error)
        .bind(before)
        .bind(after)
        .bind(rec.added.to_lines())
        .bind(rec.removed.to_lines())
        .bind(rec.drift.to_lines())
        .bind(owned_set)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.query_err(e))?
        .last_insert_rowid();
        // The sets count the apply columns that refer to them (retention
        // deletes a set when none does); one set may be referred to twice.
        sqlx::query(
            "UPDATE prefix_sets SET apply_refs = apply_refs + (id IS ?1) + (id IS ?2) + (id IS ?3)
             WHERE id IN (?1, ?2, ?3)",
        )
        .bind(before)
        .bind(after)
        .bind(owned_set)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.query_err(e))?;
        crate::history::enqueue_events(&mut tx, &events(id))
            .await
            .map_err(|e| self.query_err(e))?;
        tx.commit().await.map_err(|e| self.query_err(e))?;
        Ok(id)
    }
}
