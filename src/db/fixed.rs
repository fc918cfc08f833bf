//! The hot statements written as fixed SQL, so each is prepared once per pooled connection and
//! then found in diesel's statement cache by its type; and, on PostgreSQL, the ack's statements
//! joined in pairs (`WITH` … `INSERT`), a round trip fewer each.
//!
//! Diesel never caches an `UPDATE` built with its DSL: `UpdateStatement` marks itself unsafe to
//! cache, because a changeset with optional fields renders different SQL from call to call. So
//! SQLite parsed and planned every transition, gateway-call completion and delivery ack again:
//! 140 k instructions of a distinct approval's 1,211 k (docs/BENCHMARKS.md). These statements
//! render the same text every time (an optional field is written as `COALESCE(new, column)`:
//! `None` keeps the stored value, as diesel's `AsChangeset` skips it), so their type is their
//! cache key. Each is written once and compiled for both backends (`both_backends!`).

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use diesel::sqlite::Sqlite;

use super::gateway_calls::CallCompletion;
use super::orders::{Note, Transition};

/// Implements `QueryFragment` for SQLite and PostgreSQL with one body, plus the static
/// `QueryId` (keyed by `$id`) and `RunQueryDsl`.
macro_rules! both_backends {
    (impl[$($g:tt)*] $ty:ty, id = $id:ty, |$self:ident, $out:ident| $body:block) => {
        impl<$($g)*> QueryFragment<Sqlite> for $ty {
            fn walk_ast<'b>(&'b $self, mut $out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> $body
        }
        impl<$($g)*> QueryFragment<Pg> for $ty {
            fn walk_ast<'b>(&'b $self, mut $out: AstPass<'_, 'b, Pg>) -> QueryResult<()> $body
        }
        impl<$($g)*> QueryId for $ty {
            type QueryId = $id;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl<$($g)* Conn> RunQueryDsl<Conn> for $ty {}
    };
}

/// `, column = COALESCE(` …
fn coalesce_start<DB: diesel::backend::Backend>(out: &mut AstPass<'_, '_, DB>, column: &str) {
    out.push_sql(", ");
    out.push_sql(column);
    out.push_sql(" = COALESCE(");
}

/// … `, column)`
fn coalesce_end<DB: diesel::backend::Backend>(out: &mut AstPass<'_, '_, DB>, column: &str) {
    out.push_sql(", ");
    out.push_sql(column);
    out.push_sql(")");
}

/// `INSERT INTO webhook_deliveries (every column but id) SELECT kind, route, source_ip,
/// headers, body, received_at, dedupe_key, pg_cno, shop_order_no` (the rest of the row follows:
/// applied, outcome, order_id, ack_res_cd, ack_body, acked_at). Shared by [`DeliveryInsert`]
/// and [`ApprovalAccept`] (a macro, so one body serves both backends' `AstPass`).
macro_rules! push_delivery_row_start {
    ($out:ident, [$($text:expr),*], $at:expr, $dedupe_key:expr, $pg_cno:expr, $shop_order_no:expr) => {
        $out.push_sql(
            "INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, \
             dedupe_key, pg_cno, shop_order_no, applied, outcome, order_id, ack_res_cd, ack_body, \
             acked_at) SELECT ",
        );
        for text in [$($text),*] {
            $out.push_bind_param::<Text, str>(text)?;
            $out.push_sql(", ");
        }
        $out.push_bind_param::<Timestamp, _>($at)?;
        $out.push_sql(", ");
        $out.push_bind_param::<Text, str>($dedupe_key)?;
        $out.push_sql(", ");
        $out.push_bind_param::<Nullable<Text>, _>($pg_cno)?;
        $out.push_sql(", ");
        $out.push_bind_param::<Nullable<Text>, _>($shop_order_no)?;
    };
}

/// A transition's compare-and-set:
/// `UPDATE orders SET status, updated_at, every patch column = COALESCE(new, column)
/// [, cancelled_amount] WHERE id AND status [AND cancelled_amount]`.
/// `CANCELLED` says whether the cancelled amount is compared and set too (two statements).
pub(super) struct TransitionUpdate<'a, const CANCELLED: bool> {
    pub t: &'a Transition,
    pub to: &'static str,
    pub at: NaiveDateTime,
}

/// The cache key of a [`TransitionUpdate`].
pub(super) struct TransitionUpdateId<const CANCELLED: bool>;

both_backends!(impl['a, const CANCELLED: bool,] TransitionUpdate<'a, CANCELLED>,
    id = TransitionUpdateId<CANCELLED>, |self, out| {
    let p = &self.t.patch;
    out.push_sql("UPDATE orders SET status = ");
    out.push_bind_param::<Text, str>(self.to)?;
    out.push_sql(", updated_at = ");
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    for (column, value) in [
        ("pg_cno", &p.pg_cno),
        ("payment_page_url", &p.payment_page_url),
        ("trade_type", &p.trade_type),
        ("authorization_id", &p.authorization_id),
        ("approval_no", &p.approval_no),
        ("approval_date", &p.approval_date),
        ("transaction_date", &p.transaction_date),
        ("kicc_status_code", &p.kicc_status_code),
    ] {
        coalesce_start(&mut out, column);
        out.push_bind_param::<Nullable<Text>, _>(value)?;
        coalesce_end(&mut out, column);
    }
    for (column, value) in [("expires_at", &p.expires_at), ("paid_at", &p.paid_at)] {
        coalesce_start(&mut out, column);
        out.push_bind_param::<Nullable<Timestamp>, _>(value)?;
        coalesce_end(&mut out, column);
    }
    let cancelled = match &self.t.cancelled_amount {
        Some((expected, new)) if CANCELLED => Some((expected, new)),
        None if !CANCELLED => None,
        _ => {
            return Err(diesel::result::Error::QueryBuilderError(
                "TransitionUpdate: CANCELLED does not match the transition".into(),
            ));
        }
    };
    if let Some((_, new)) = cancelled {
        out.push_sql(", cancelled_amount = ");
        out.push_bind_param::<BigInt, _>(new)?;
    }
    out.push_sql(" WHERE id = ");
    out.push_bind_param::<BigInt, _>(&self.t.order_id)?;
    out.push_sql(" AND status = ");
    out.push_bind_param::<Text, str>(self.t.expected.as_str())?;
    if let Some((expected, _)) = cancelled {
        out.push_sql(" AND cancelled_amount = ");
        out.push_bind_param::<BigInt, _>(expected)?;
    }
    Ok(())
});

/// A gateway call's ending: `UPDATE gateway_calls SET response_body … completed_at WHERE id`.
pub(super) struct CallCompletionUpdate<'a> {
    pub id: i64,
    pub done: &'a CallCompletion,
    pub at: NaiveDateTime,
}

both_backends!(impl['a,] CallCompletionUpdate<'a>, id = CallCompletionUpdate<'static>, |self, out| {
    let d = self.done;
    out.push_sql("UPDATE gateway_calls SET response_body = ");
    out.push_bind_param::<Nullable<Text>, _>(&d.response_body)?;
    out.push_sql(", http_status = ");
    out.push_bind_param::<Nullable<Integer>, _>(&d.http_status)?;
    out.push_sql(", outcome = ");
    out.push_bind_param::<Text, str>(d.outcome)?;
    out.push_sql(", res_cd = ");
    out.push_bind_param::<Nullable<Text>, _>(&d.res_cd)?;
    out.push_sql(", res_msg = ");
    out.push_bind_param::<Nullable<Text>, _>(&d.res_msg)?;
    out.push_sql(", pg_cno = ");
    out.push_bind_param::<Nullable<Text>, _>(&d.pg_cno)?;
    out.push_sql(", latency_ms = ");
    out.push_bind_param::<BigInt, _>(&d.latency_ms)?;
    out.push_sql(", completed_at = ");
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    out.push_sql(" WHERE id = ");
    out.push_bind_param::<BigInt, _>(&self.id)?;
    Ok(())
});

/// A delivery's handling and ack: `UPDATE webhook_deliveries SET ack_res_cd, ack_body, acked_at
/// WHERE id`, the last write of the delivery's transaction. [`DeliveryInsert`] stored the
/// delivery as claiming its key with the handling's expected outcome; when the handling ends
/// otherwise, `FULL` also sets `applied, outcome, order_id` (a delivery that does not claim its
/// key releases it then). When it ends as expected, no indexed column changes, so PostgreSQL
/// can make it a HOT update (the new version in the same page, no new entries in the table's
/// indexes: 5,959 of 6,000 acks in a burst, docs/BENCHMARKS.md) and SQLite rewrites the row
/// alone.
pub(super) struct DeliveryFinish<'a, const FULL: bool> {
    pub id: i64,
    pub applied: bool,
    pub outcome: &'a str,
    pub order_id: Option<i64>,
    pub ack_res_cd: &'a str,
    pub ack_body: &'a str,
    pub at: NaiveDateTime,
}

/// The cache key of a [`DeliveryFinish`].
pub(super) struct DeliveryFinishId<const FULL: bool>;

both_backends!(impl['a, const FULL: bool,] DeliveryFinish<'a, FULL>, id = DeliveryFinishId<FULL>,
    |self, out| {
    out.push_sql("UPDATE webhook_deliveries SET ack_res_cd = ");
    out.push_bind_param::<Text, str>(self.ack_res_cd)?;
    out.push_sql(", ack_body = ");
    out.push_bind_param::<Text, str>(self.ack_body)?;
    out.push_sql(", acked_at = ");
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    if FULL {
        out.push_sql(", applied = ");
        out.push_bind_param::<diesel::sql_types::Bool, _>(&self.applied)?;
        out.push_sql(", outcome = ");
        out.push_bind_param::<Text, str>(self.outcome)?;
        out.push_sql(", order_id = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.order_id)?;
    }
    out.push_sql(" WHERE id = ");
    out.push_bind_param::<BigInt, _>(&self.id)?;
    Ok(())
});

/// A delivery stored together with the answer to "was its key applied before?", in one
/// statement instead of a lookup and an insert (one round trip fewer per delivery on
/// PostgreSQL, docs/BENCHMARKS.md):
/// `INSERT INTO webhook_deliveries (…) SELECT …, NOT d.dup, CASE WHEN d.dup THEN answer ELSE
/// expected END, (the order numbered $n, unless d.dup) … FROM (SELECT EXISTS (an applied
/// delivery of the key) AS dup) d RETURNING id, NOT applied AS dup, order_id`.
///
/// A duplicate is stored answered with `duplicate`, applying nothing. Any other is stored
/// claiming its key (`applied`), with the outcome its handling is expected to end with and the
/// order its notification names, so that [`DeliveryFinish`] usually writes only the ack (a HOT
/// update on PostgreSQL). The claim is made by the insert: a delivery of the same key applied
/// by a transaction still uncommitted, which `EXISTS` does not see, makes it wait on the unique
/// index on applied keys and then fail with a unique violation, before any effect.
pub(super) struct DeliveryInsert<'a> {
    pub kind: &'a str,
    pub route: &'a str,
    pub source_ip: &'a str,
    pub headers: &'a str,
    pub body: &'a str,
    pub at: NaiveDateTime,
    pub dedupe_key: &'a str,
    pub pg_cno: Option<&'a str>,
    pub shop_order_no: Option<&'a str>,
    /// The outcome the handling is expected to end with, stored with the claim.
    pub expected: &'a str,
    /// The shopOrderNo of the order the notification names: its id is stored with the claim.
    pub order_no: Option<&'a str>,
    /// The duplicate's outcome, ack code and ack body.
    pub duplicate: [&'a str; 3],
}

impl diesel::query_builder::Query for DeliveryInsert<'_> {
    type SqlType = (BigInt, diesel::sql_types::Bool, Nullable<BigInt>);
}

both_backends!(impl['a,] DeliveryInsert<'a>, id = DeliveryInsert<'static>, |self, out| {
    push_delivery_row_start!(
        out,
        [self.kind, self.route, self.source_ip, self.headers, self.body],
        &self.at,
        self.dedupe_key,
        &self.pg_cno,
        &self.shop_order_no
    );
    out.push_sql(", NOT d.dup, CASE WHEN d.dup THEN ");
    out.push_bind_param::<Text, str>(self.duplicate[0])?;
    out.push_sql(" ELSE ");
    out.push_bind_param::<Text, str>(self.expected)?;
    out.push_sql(" END, (SELECT id FROM orders WHERE NOT d.dup AND shop_order_no = ");
    out.push_bind_param::<Nullable<Text>, _>(&self.order_no)?;
    out.push_sql(")");
    for text in &self.duplicate[1..] {
        out.push_sql(", CASE WHEN d.dup THEN ");
        out.push_bind_param::<Text, str>(text)?;
        out.push_sql(" END");
    }
    out.push_sql(", CASE WHEN d.dup THEN ");
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    out.push_sql(
        " END FROM (SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE kind = ",
    );
    out.push_bind_param::<Text, str>(self.kind)?;
    out.push_sql(" AND dedupe_key = ");
    out.push_bind_param::<Text, str>(self.dedupe_key)?;
    out.push_sql(" AND applied) AS dup) d RETURNING id, NOT applied AS dup, order_id");
    Ok(())
});

/// The columns of an order as [`super::orders`] reads them.
type OrderColumns = <super::orders::OrderRow as Selectable<Pg>>::SelectExpression;

/// PostgreSQL only: a [`DeliveryInsert`] and the order its notification names, in one round
/// trip instead of two (docs/BENCHMARKS.md: the ack's statements):
/// `WITH d AS (the insert) SELECT d.id, d.dup, orders.* FROM d LEFT JOIN orders ON orders.id =
/// d.order_id`. The insert always returns its one row, so the statement does too, with the
/// order's columns `NULL` when no order has that number or the delivery is a duplicate (whose
/// order is not looked up). SQLite has no round trips to save (and no `INSERT` in a `WITH`): it
/// runs the two statements.
pub(super) struct DeliveryInsertFindOrder<'a> {
    insert: DeliveryInsert<'a>,
    columns: OrderColumns,
}

impl<'a> DeliveryInsertFindOrder<'a> {
    pub fn new(insert: DeliveryInsert<'a>) -> Self {
        Self {
            insert,
            columns: <super::orders::OrderRow as Selectable<Pg>>::construct_selection(),
        }
    }
}

impl diesel::query_builder::Query for DeliveryInsertFindOrder<'_> {
    type SqlType = (
        BigInt,
        diesel::sql_types::Bool,
        Nullable<diesel::dsl::SqlTypeOf<OrderColumns>>,
    );
}

impl QueryFragment<Pg> for DeliveryInsertFindOrder<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH d AS (");
        QueryFragment::<Pg>::walk_ast(&self.insert, out.reborrow())?;
        out.push_sql(") SELECT d.id, d.dup, ");
        self.columns.walk_ast(out.reborrow())?;
        out.push_sql(" FROM d LEFT JOIN orders ON orders.id = d.order_id");
        Ok(())
    }
}

impl QueryId for DeliveryInsertFindOrder<'_> {
    type QueryId = DeliveryInsertFindOrder<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> RunQueryDsl<Conn> for DeliveryInsertFindOrder<'_> {}

/// PostgreSQL only: a [`DeliveryFinish`] and the timeline note its handling wrote, in one round
/// trip instead of two (docs/BENCHMARKS.md: the ack's statements): `WITH n AS (INSERT INTO
/// order_events …) UPDATE webhook_deliveries …`. Both happen or neither. SQLite runs the two
/// statements.
pub(super) struct NotedDeliveryFinish<'a, const FULL: bool> {
    pub note: Note<'a>,
    pub finish: DeliveryFinish<'a, FULL>,
}

impl<const FULL: bool> QueryFragment<Pg> for NotedDeliveryFinish<'_, FULL> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH n AS (INSERT INTO order_events (order_id, event, from_status, to_status, \
             cause, created_at) VALUES (",
        );
        out.push_bind_param::<BigInt, _>(&self.note.order_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, str>(self.note.event)?;
        out.push_sql(", NULL, NULL, ");
        out.push_bind_param::<Text, str>(self.note.cause)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.finish.at)?;
        out.push_sql(")) ");
        QueryFragment::<Pg>::walk_ast(&self.finish, out.reborrow())
    }
}

/// The cache key of a [`NotedDeliveryFinish`].
pub(super) struct NotedDeliveryFinishId<const FULL: bool>;

impl<const FULL: bool> QueryId for NotedDeliveryFinish<'_, FULL> {
    type QueryId = NotedDeliveryFinishId<FULL>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const FULL: bool, Conn> RunQueryDsl<Conn> for NotedDeliveryFinish<'_, FULL> {}

/// PostgreSQL only: an approval notification stored, handled and acked by one statement run
/// on its own (its own transaction, committed when it returns), when it is a resend of an
/// applied key or when it finds its order as the ack's transaction would accept it: one round
/// trip instead of the transaction's four (`BEGIN`, [`DeliveryInsertFindOrder`],
/// [`NotedDeliveryFinish`], `COMMIT`; docs/BENCHMARKS.md):
///
/// ```sql
/// WITH k AS (SELECT EXISTS (an applied delivery of the key) AS dup),
///      o AS (SELECT id FROM orders, k WHERE NOT k.dup AND shop_order_no = $n
///            AND pay_method AND (pg_cno IS NULL OR pg_cno = $p) AND amount AND currency
///            AND status IN (the statuses waiting for an approval)),
///      d AS (INSERT INTO webhook_deliveries (…) SELECT …, NOT k.dup, CASE WHEN k.dup THEN
///            'duplicate' ELSE 'accepted' END, o.id, ack … FROM k LEFT JOIN o ON true
///            WHERE k.dup OR o.id IS NOT NULL RETURNING id, applied, order_id),
///      n AS (INSERT INTO order_events (…) SELECT order_id, note … FROM d WHERE applied)
/// SELECT id, applied, order_id FROM d
/// ```
///
/// It writes what the transaction writes in those two cases, and nothing in any other (no
/// row returned): the caller then runs the transaction. Like [`DeliveryInsert`], a delivery of
/// the key applied by a transaction still committing makes it wait and fail with a unique
/// violation, before any effect.
pub(super) struct ApprovalAccept<'a> {
    pub delivery: &'a super::webhook_deliveries::NewDelivery<'a>,
    pub at: NaiveDateTime,
    pub expected: &'a super::webhook_deliveries::ExpectedApproval<'a>,
}

impl diesel::query_builder::Query for ApprovalAccept<'_> {
    type SqlType = (BigInt, diesel::sql_types::Bool, Nullable<BigInt>);
}

impl QueryFragment<Pg> for ApprovalAccept<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (new, e) = (self.delivery, self.expected);
        out.push_sql("WITH k AS (SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE kind = ");
        out.push_bind_param::<Text, str>(new.kind)?;
        out.push_sql(" AND dedupe_key = ");
        out.push_bind_param::<Text, str>(e.dedupe_key)?;
        out.push_sql(
            " AND applied) AS dup), o AS (SELECT orders.id FROM orders, k WHERE NOT k.dup \
             AND shop_order_no = ",
        );
        out.push_bind_param::<Text, str>(e.order_no.as_str())?;
        out.push_sql(" AND pay_method = ");
        out.push_bind_param::<Text, str>(e.pay_method)?;
        out.push_sql(" AND (pg_cno IS NULL OR pg_cno = ");
        out.push_bind_param::<Text, str>(e.pg_cno)?;
        out.push_sql(") AND amount = ");
        out.push_bind_param::<BigInt, _>(&e.amount)?;
        out.push_sql(" AND currency = ");
        out.push_bind_param::<Text, str>(e.currency)?;
        out.push_sql(" AND status IN (");
        for (i, status) in e.statuses.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, str>(status)?;
        }
        out.push_sql(")), d AS (");
        push_delivery_row_start!(
            out,
            [new.kind, new.route, new.source_ip, new.headers, new.body],
            &self.at,
            e.dedupe_key,
            &new.pg_cno,
            &new.shop_order_no
        );
        out.push_sql(", NOT k.dup, CASE WHEN k.dup THEN ");
        out.push_bind_param::<Text, str>(e.duplicate.outcome)?;
        out.push_sql(" ELSE ");
        out.push_bind_param::<Text, str>(e.accepted)?;
        out.push_sql(" END, o.id, ");
        out.push_bind_param::<Text, str>(e.duplicate.ack_res_cd)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, str>(e.duplicate.ack_body)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(
            " FROM k LEFT JOIN o ON true WHERE k.dup OR o.id IS NOT NULL \
             RETURNING id, applied, order_id), n AS (INSERT INTO order_events (order_id, event, \
             from_status, to_status, cause, created_at) SELECT order_id, ",
        );
        out.push_bind_param::<Text, str>(e.event)?;
        out.push_sql(", NULL, NULL, ");
        out.push_bind_param::<Text, str>(e.cause)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(" FROM d WHERE applied) SELECT id, applied, order_id FROM d");
        Ok(())
    }
}

impl QueryId for ApprovalAccept<'_> {
    type QueryId = ApprovalAccept<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> RunQueryDsl<Conn> for ApprovalAccept<'_> {}
