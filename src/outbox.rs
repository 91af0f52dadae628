//! The outbox of notifications, in the history database.
//!
//! An event is written in the same transaction as the fact it describes (a
//! feed run, a target's apply), one row per receiver, and deleted once that
//! receiver accepted it. So an event exists exactly when its fact does: a
//! crash before the commit loses both, a crash after it loses neither, and
//! a receiver that is down keeps its rows until it answers.
//!
//! Writing an event belongs to the history ([`crate::history::Outgoing`],
//! written by the transactions that record runs and applies); this module
//! is the delivery side: what waits, what was taken, what failed.

use sqlx::Row;

use crate::history::{History, HistoryError};

/// An event waiting for one receiver.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: String,
}

impl History {
    fn outbox_err(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Query {
            path: self.path().display().to_string(),
            detail: e.to_string(),
        }
    }

    /// This history's id: the `source` of the events its runs send.
    pub async fn instance_id(&self) -> Result<String, HistoryError> {
        sqlx::query_scalar("SELECT uuid FROM instance WHERE id = 1")
            .fetch_one(self.pool())
            .await
            .map_err(|e| self.outbox_err(e))
    }

    /// A receiver's waiting events, oldest first.
    pub async fn outbox_waiting(
        &self,
        sink: &str,
        limit: u32,
    ) -> Result<Vec<Queued>, HistoryError> {
        let rows = sqlx::query(
            "SELECT id, event_id, type, body, attempts, next_attempt_at FROM outbox
             WHERE sink = ?1 ORDER BY id LIMIT ?2",
        )
        .bind(sink)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.outbox_err(e))?;
        Ok(rows
            .iter()
            .map(|r| Queued {
                id: r.get(0),
                event_id: r.get(1),
                kind: r.get(2),
                body: r.get(3),
                attempts: r.get(4),
                next_attempt_at: r.get(5),
            })
            .collect())
    }

    /// The receiver accepted the event.
    pub async fn outbox_delivered(&self, id: i64) -> Result<(), HistoryError> {
        sqlx::query("DELETE FROM outbox WHERE id = ?1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(|e| self.outbox_err(e))?;
        Ok(())
    }

    /// The receiver did not accept it: count the attempts, keep why, and
    /// say when the daemon tries again.
    pub async fn outbox_failed(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        next_attempt_at: &str,
    ) -> Result<(), HistoryError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(attempts)
        .bind(error)
        .bind(next_attempt_at)
        .execute(self.pool())
        .await
        .map_err(|e| self.outbox_err(e))?;
        Ok(())
    }

    /// Waiting events per receiver, and when the earliest is due.
    pub async fn outbox_summary(&self) -> Result<Vec<(String, i64, String)>, HistoryError> {
        let rows = sqlx::query(
            "SELECT sink, COUNT(*), MIN(next_attempt_at) FROM outbox GROUP BY sink ORDER BY sink",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.outbox_err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Drops the events of receivers no longer configured; returns how
    /// many.
    pub async fn outbox_forget_others(&self, sinks: &[String]) -> Result<u64, HistoryError> {
        let names = serde_json::to_string(sinks).unwrap_or_else(|_| "[]".into());
        Ok(
            sqlx::query("DELETE FROM outbox WHERE sink NOT IN (SELECT value FROM json_each(?1))")
                .bind(names)
                .execute(self.pool())
                .await
                .map_err(|e| self.outbox_err(e))?
                .rows_affected(),
        )
    }
}
