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

/// A delivery's handling and ack, and whether it claims its key's effect:
/// `UPDATE webhook_deliveries SET applied, outcome, order_id, ack_res_cd, ack_body, acked_at
/// WHERE id`. `applied = TRUE` is refused by the unique partial index on applied keys when
/// another delivery of the key was applied first (also one committing concurrently): one
/// statement for the claim and the ack, the last of the delivery's transaction.
pub(super) struct DeliveryFinish<'a> {
    pub id: i64,
    pub applied: bool,
    pub outcome: &'a str,
    pub order_id: Option<i64>,
    pub ack_res_cd: &'a str,
    pub ack_body: &'a str,
    pub at: NaiveDateTime,
}

both_backends!(impl['a,] DeliveryFinish<'a>, id = DeliveryFinish<'static>, |self, out| {
    out.push_sql("UPDATE webhook_deliveries SET applied = ");
    out.push_bind_param::<diesel::sql_types::Bool, _>(&self.applied)?;
    out.push_sql(", outcome = ");
    out.push_bind_param::<Text, str>(self.outcome)?;
    out.push_sql(", order_id = ");
    out.push_bind_param::<Nullable<BigInt>, _>(&self.order_id)?;
    out.push_sql(", ack_res_cd = ");
    out.push_bind_param::<Text, str>(self.ack_res_cd)?;
    out.push_sql(", ack_body = ");
    out.push_bind_param::<Text, str>(self.ack_body)?;
    out.push_sql(", acked_at = ");
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    out.push_sql(" WHERE id = ");
    out.push_bind_param::<BigInt, _>(&self.id)?;
    Ok(())
});

/// A delivery stored together with the answer to "was its key applied before?", in one
/// statement instead of a lookup and an insert (one round trip fewer per delivery on
/// PostgreSQL, docs/BENCHMARKS.md):
/// `INSERT INTO webhook_deliveries (…) SELECT …, CASE WHEN dup THEN answer END … FROM
/// (SELECT EXISTS (an applied delivery of the key) AS dup) RETURNING id, outcome IS NOT NULL
/// AS dup`.
/// A duplicate is stored answered with `duplicate`; any other is stored unanswered, to be
/// applied. (A delivery of the same key applied by a transaction still uncommitted is not seen
/// here; the unique index on applied keys catches it when this one is applied.)
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
    /// The duplicate's outcome, ack code and ack body.
    pub duplicate: [&'a str; 3],
}

impl diesel::query_builder::Query for DeliveryInsert<'_> {
    type SqlType = (BigInt, diesel::sql_types::Bool);
}

both_backends!(impl['a,] DeliveryInsert<'a>, id = DeliveryInsert<'static>, |self, out| {
    out.push_sql(
        "INSERT INTO webhook_deliveries (kind, route, source_ip, headers, body, received_at, \
         dedupe_key, pg_cno, shop_order_no, applied, outcome, ack_res_cd, ack_body, acked_at) \
         SELECT ",
    );
    for text in [self.kind, self.route, self.source_ip, self.headers, self.body] {
        out.push_bind_param::<Text, str>(text)?;
        out.push_sql(", ");
    }
    out.push_bind_param::<Timestamp, _>(&self.at)?;
    out.push_sql(", ");
    out.push_bind_param::<Text, str>(self.dedupe_key)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Text>, _>(&self.pg_cno)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Text>, _>(&self.shop_order_no)?;
    out.push_sql(", FALSE");
    for text in &self.duplicate {
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
    out.push_sql(" AND applied) AS dup) d RETURNING id, outcome IS NOT NULL AS dup");
    Ok(())
});

/// The columns of an order as [`super::orders`] reads them.
type OrderColumns = <super::orders::OrderRow as Selectable<Pg>>::SelectExpression;

/// PostgreSQL only: a [`DeliveryInsert`] and the order its notification names, in one round
/// trip instead of two (docs/BENCHMARKS.md: the ack's statements):
/// `WITH d AS (the insert) SELECT d.id, d.dup, orders.* FROM d LEFT JOIN LATERAL (the order
/// of number $n, unless d.dup) AS orders ON TRUE`. The insert always returns its one row, so
/// the statement does too, with the order's columns `NULL` when no order has that number or
/// the delivery is a duplicate. SQLite has no round trips to
/// save (and no `INSERT` in a `WITH`): it runs the two statements.
pub(super) struct DeliveryInsertFindOrder<'a> {
    insert: DeliveryInsert<'a>,
    shop_order_no: &'a str,
    columns: OrderColumns,
}

impl<'a> DeliveryInsertFindOrder<'a> {
    pub fn new(insert: DeliveryInsert<'a>, shop_order_no: &'a str) -> Self {
        Self {
            insert,
            shop_order_no,
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
        // A duplicate needs no order: `NOT d.dup` in the lateral subquery is a one-time filter,
        // so its index scan does not run then. The subquery takes the table's name, so the
        // columns above read from it.
        out.push_sql(
            " FROM d LEFT JOIN LATERAL (SELECT * FROM orders WHERE NOT d.dup AND \
             orders.shop_order_no = ",
        );
        out.push_bind_param::<Text, str>(self.shop_order_no)?;
        out.push_sql(") AS orders ON TRUE");
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
/// order_events …) UPDATE webhook_deliveries …`. Both happen or neither: the note is refused
/// with the statement when the claim meets the unique index. SQLite runs the two statements.
pub(super) struct NotedDeliveryFinish<'a> {
    pub note: Note<'a>,
    pub finish: DeliveryFinish<'a>,
}

impl QueryFragment<Pg> for NotedDeliveryFinish<'_> {
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

impl QueryId for NotedDeliveryFinish<'_> {
    type QueryId = NotedDeliveryFinish<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> RunQueryDsl<Conn> for NotedDeliveryFinish<'_> {}
