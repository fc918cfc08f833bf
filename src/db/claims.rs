//! The reconciler's claims: each instance takes a batch of due work under a lease, so instances
//! sharing one database never work the same item twice. On PostgreSQL the candidates are picked
//! with `FOR UPDATE SKIP LOCKED` (concurrent claimers skip each other's rows instead of waiting);
//! on SQLite the claim runs inside `BEGIN IMMEDIATE`, which serialises writers anyway.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use super::{AnyConnection, DbError, write_transaction};

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Which work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Compensations due for an attempt or a confirmation check.
    DueCompensations,
    /// Orders waiting for the shopper past their expiry (or never registered).
    ExpiredOrders,
    /// Approval calls that got no answer (a crash) or an unknown one, past the timeout.
    UnansweredApprovals,
    /// Orders whose approval was notified but not yet confirmed by a status check: the
    /// notification's follow-up did not finish (a crash, a stop). `{t}` is when a follow-up
    /// should have: a notification received since is left to its follow-up.
    NotifiedApprovals,
    /// WeChat orders that expired or failed, due for another look at KICC (`late_check_at`):
    /// a payment made after the order closed must end paid or refunded even when its
    /// notification never arrives.
    LateChecks,
}

impl Work {
    pub const ALL: [Work; 5] = [
        Work::DueCompensations,
        Work::ExpiredOrders,
        Work::UnansweredApprovals,
        Work::NotifiedApprovals,
        Work::LateChecks,
    ];

    /// (table, the condition a candidate meets with one time parameter `{t}`, the order).
    /// `{deliveries}` is `webhook_deliveries d`, with SQLite's index hint (`claim_sql`).
    fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Work::DueCompensations => (
                "compensations",
                "status IN ('pending', 'requested') AND next_attempt_at <= {t}",
                "next_attempt_at",
            ),
            Work::ExpiredOrders => (
                "orders",
                "status IN ('created', 'pending', 'authorized') AND expires_at IS NOT NULL AND expires_at <= {t}",
                "expires_at",
            ),
            Work::UnansweredApprovals => (
                "gateway_calls",
                // `resolved_at IS NULL AND (completed_at IS NULL OR outcome IN (…))` is the
                // condition of the partial index `gateway_calls_unresolved`, written the same
                // so that both backends see the index applies.
                "api IN ('approval_v2', 'kiccpay_approve') AND resolved_at IS NULL AND requested_at <= {t} \
                 AND (completed_at IS NULL OR outcome IN ('timeout', 'transport_error', 'malformed'))",
                "requested_at",
            ),
            Work::NotifiedApprovals => (
                "orders",
                // From the orders still waiting (few), each probed through its deliveries'
                // index: not from every approval ever accepted, a set that only grows (each
                // pass read all of it: in a burst of approvals, the statement PostgreSQL was
                // most often running, docs/BENCHMARKS.md).
                // `{deliveries}`: SQLite is told the index; without statistics it took
                // `(outcome, received_at)` instead, every accepted delivery per waiting order.
                "status IN ('pending', 'authorized', 'approving') AND EXISTS (SELECT 1 FROM \
                 {deliveries} WHERE d.order_id = orders.id AND d.outcome = 'accepted' \
                 AND d.received_at <= {t})",
                "id",
            ),
            Work::LateChecks => (
                "orders",
                // The condition of the partial index `orders_late_check`, and the status.
                "late_check_at IS NOT NULL AND late_check_at <= {t} AND status IN ('expired', 'failed')",
                "late_check_at",
            ),
        }
    }
}

/// The claim's statement on PostgreSQL (`postgres`) or SQLite, with its five parameters: the
/// owner, the lease's end, the time candidates must be due by, now, and the batch's size.
pub fn claim_sql(work: Work, postgres: bool) -> String {
    let (table, condition, order) = work.sql();
    // Placeholders in the order they are bound: `$n` for PostgreSQL, `?` for SQLite (which
    // numbers `$n` by first appearance, not by n).
    let (p, lock, deliveries): ([&str; 5], &str, &str) = if postgres {
        (
            ["$1", "$2", "$3", "$4", "$5"],
            "FOR UPDATE SKIP LOCKED",
            "webhook_deliveries d",
        )
    } else {
        (
            ["?"; 5],
            "",
            "webhook_deliveries d INDEXED BY webhook_deliveries_order",
        )
    };
    let condition = condition
        .replace("{t}", p[2])
        .replace("{deliveries}", deliveries);
    format!(
        "UPDATE {table} SET lease_owner = {}, lease_until = {} WHERE id IN (\
         SELECT id FROM {table} WHERE {condition} AND (lease_until IS NULL OR lease_until < {}) \
         ORDER BY {order} LIMIT {} {lock}) RETURNING id",
        p[0], p[1], p[3], p[4]
    )
}

/// Claims up to `limit` items of `work` for `owner` until `lease_until`; returns their ids.
/// `due_before` is the time the candidates' own clock must have passed (now, or for unanswered
/// calls now minus the timeout and a grace period).
pub fn claim(
    conn: &mut AnyConnection,
    work: Work,
    owner: &str,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    due_before: NaiveDateTime,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let sql = claim_sql(work, matches!(conn, AnyConnection::Postgresql(_)));
    write_transaction(conn, |conn| {
        let ids = diesel::sql_query(sql)
            .bind::<Text, _>(owner)
            .bind::<Timestamp, _>(lease_until)
            .bind::<Timestamp, _>(due_before)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(limit)
            .load::<Id>(conn)?;
        Ok(ids.into_iter().map(|i| i.id).collect())
    })
}

/// Gives an item back once handled, so the next pass may take it again if it is still due
/// (its own clock — `next_attempt_at`, the expiry — says when).
pub fn release(conn: &mut AnyConnection, work: Work, id: i64, owner: &str) -> Result<(), DbError> {
    let (table, _, _) = work.sql();
    let (p1, p2) = match conn {
        AnyConnection::Postgresql(_) => ("$1", "$2"),
        AnyConnection::Sqlite(_) => ("?", "?"),
    };
    diesel::sql_query(format!(
        "UPDATE {table} SET lease_owner = NULL, lease_until = NULL WHERE id = {p1} AND lease_owner = {p2}"
    ))
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(owner)
    .execute(conn)?;
    Ok(())
}
