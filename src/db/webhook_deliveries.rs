//! `webhook_deliveries`: every notification KICC (or anyone) delivers, stored before it is
//! processed, with its source, body and the ack we gave. At most one delivery per dedupe key
//! (pgCno for approvals, cancelPgCno for cancellations, spec 06) is ever `applied`: a unique
//! partial index makes that true across threads and instances.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::fixed::{
    ApprovalAccept, DeliveryFinish, DeliveryInsert, DeliveryInsertFindOrder, NotedDeliveryFinish,
};
use super::orders::{self, Note, OrderRow};
use super::schema::webhook_deliveries;
use super::{AnyConnection, DbError, now, on_backend};
use crate::domain::{Order, ShopOrderNo};

#[derive(Insertable)]
#[diesel(table_name = webhook_deliveries, treat_none_as_default_value = false)]
struct NewRow<'a> {
    kind: &'a str,
    route: &'a str,
    source_ip: &'a str,
    headers: &'a str,
    body: &'a str,
    received_at: NaiveDateTime,
    dedupe_key: Option<&'a str>,
    pg_cno: Option<&'a str>,
    shop_order_no: Option<&'a str>,
    applied: bool,
    outcome: Option<&'a str>,
    ack_res_cd: Option<&'a str>,
    ack_body: Option<&'a str>,
    acked_at: Option<NaiveDateTime>,
}

/// How a delivery was answered: stored with the delivery in one insert when that is known
/// before it is stored (a refusal, a duplicate), else by [`finish`].
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub outcome: &'a str,
    pub ack_res_cd: &'a str,
    pub ack_body: &'a str,
}

/// A delivery as received.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// `payment`, `cancel` or `unknown` (not parsed).
    pub kind: &'a str,
    pub route: &'a str,
    pub source_ip: &'a str,
    /// The request headers as JSON (no cookies or authorization).
    pub headers: &'a str,
    pub body: &'a str,
    pub dedupe_key: Option<&'a str>,
    pub pg_cno: Option<&'a str>,
    pub shop_order_no: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct Delivery {
    pub id: i64,
    pub kind: String,
    pub route: String,
    pub source_ip: String,
    pub headers: String,
    pub body: String,
    pub received_at: NaiveDateTime,
    pub dedupe_key: Option<String>,
    pub pg_cno: Option<String>,
    pub shop_order_no: Option<String>,
    pub order_id: Option<i64>,
    pub outcome: Option<String>,
    pub applied: bool,
    pub ack_res_cd: Option<String>,
    pub ack_body: Option<String>,
    pub acked_at: Option<NaiveDateTime>,
}

/// Stores a delivery already answered (see [`Answered`]).
pub fn insert_answered(
    conn: &mut AnyConnection,
    new: &NewDelivery<'_>,
    answered: Answered<'_>,
) -> Result<i64, DbError> {
    let at = now();
    let row = NewRow {
        kind: new.kind,
        route: new.route,
        source_ip: new.source_ip,
        headers: new.headers,
        body: new.body,
        received_at: at,
        dedupe_key: new.dedupe_key,
        pg_cno: new.pg_cno,
        shop_order_no: new.shop_order_no,
        applied: false,
        outcome: Some(answered.outcome),
        ack_res_cd: Some(answered.ack_res_cd),
        ack_body: Some(answered.ack_body),
        acked_at: Some(at),
    };
    Ok(
        on_backend!(conn, c => diesel::insert_into(webhook_deliveries::table)
        .values(&row)
        .returning(webhook_deliveries::id)
        .get_result(c))?,
    )
}

/// A parsed delivery as stored by [`insert_unless_applied`].
#[derive(Debug)]
pub struct Inserted {
    pub id: i64,
    /// A delivery of its key was applied before: stored answered as `duplicate`.
    pub duplicate: bool,
    /// The order the delivery names, when it was asked for and it is not a duplicate.
    pub order: Option<Order>,
    /// Unless a duplicate, the delivery was stored claiming its key with this outcome and this
    /// order (the id of [`Self::order`], kept here when the order is handed to the handling);
    /// [`finish`] writes only the ack when the handling ends so.
    expected: &'static str,
    claimed_order_id: Option<i64>,
}

/// Stores a parsed delivery whose key is `dedupe_key` ([`DeliveryInsert`], one statement):
/// answered as `duplicate` when a delivery of that key was already applied (KICC's resends);
/// otherwise claiming its key, as handled with the `expected` outcome, for [`finish`] to
/// answer. A delivery of the key applied by a concurrent transaction makes it fail with a
/// unique violation, before any effect. With `order_no`, it also reads the order of that
/// number for the delivery's handling: in the same statement on PostgreSQL
/// ([`DeliveryInsertFindOrder`], a round trip fewer), in a second one on SQLite; a duplicate's
/// order is not read.
pub fn insert_unless_applied(
    conn: &mut AnyConnection,
    new: &NewDelivery<'_>,
    dedupe_key: &str,
    duplicate: Answered<'_>,
    expected: &'static str,
    order_no: Option<&ShopOrderNo>,
) -> Result<Inserted, DbError> {
    let insert = DeliveryInsert {
        kind: new.kind,
        route: new.route,
        source_ip: new.source_ip,
        headers: new.headers,
        body: new.body,
        at: now(),
        dedupe_key,
        pg_cno: new.pg_cno,
        shop_order_no: new.shop_order_no,
        expected,
        order_no: order_no.map(ShopOrderNo::as_str),
        duplicate: [duplicate.outcome, duplicate.ack_res_cd, duplicate.ack_body],
    };
    let (id, duplicate, order) = match conn {
        AnyConnection::Postgresql(c) if order_no.is_some() => {
            let (id, duplicate, row) =
                DeliveryInsertFindOrder::new(insert)
                    .get_result::<(i64, bool, Option<OrderRow>)>(c)?;
            (id, duplicate, row.map(Order::try_from).transpose()?)
        }
        conn => {
            let (id, duplicate, order_id) =
                on_backend!(&mut *conn, c => insert.get_result::<(i64, bool, Option<i64>)>(c))?;
            let order = match order_id {
                Some(order_id) => orders::find_by_id(conn, order_id)?,
                None => None,
            };
            (id, duplicate, order)
        }
    };
    Ok(Inserted {
        id,
        duplicate,
        claimed_order_id: order.as_ref().map(|o| o.id),
        order,
        expected,
    })
}

/// The failure of a delivery's claim on its key: a delivery of the same key was applied by a
/// transaction that committed first (the unique index on applied keys).
pub fn is_claimed_by_another(e: &DbError) -> bool {
    e.is_unique_violation_of(
        "webhook_deliveries_applied_once",
        "webhook_deliveries.kind, webhook_deliveries.dedupe_key",
    )
}

/// How a delivery stored by [`insert_unless_applied`] was handled, for [`finish`].
#[derive(Debug, Clone, Copy)]
pub struct Handled<'a> {
    pub answered: Answered<'a>,
    /// The delivery keeps its claim on its key's effect.
    pub applied: bool,
    pub order_id: Option<i64>,
    /// The handling's note on the order's timeline.
    pub note: Option<Note<'a>>,
}

/// Records how a delivery was handled and what we answered: only the ack when it was handled
/// as its insert expected, else also its outcome, order and claim (a delivery that does not
/// apply releases its key). With a note, the note is written on the order's timeline too: in
/// the same statement on PostgreSQL ([`NotedDeliveryFinish`], a round trip fewer), before it
/// on SQLite.
pub fn finish(
    conn: &mut AnyConnection,
    inserted: &Inserted,
    handled: Handled<'_>,
) -> Result<(), DbError> {
    let as_expected = handled.applied
        && handled.answered.outcome == inserted.expected
        && handled.order_id == inserted.claimed_order_id;
    if as_expected {
        finish_as::<false>(conn, inserted.id, handled)
    } else {
        finish_as::<true>(conn, inserted.id, handled)
    }
}

/// [`finish`] with the ack alone (`FULL = false`) or the whole handling.
fn finish_as<const FULL: bool>(
    conn: &mut AnyConnection,
    id: i64,
    handled: Handled<'_>,
) -> Result<(), DbError> {
    let finish = DeliveryFinish::<FULL> {
        id,
        applied: handled.applied,
        outcome: handled.answered.outcome,
        order_id: handled.order_id,
        ack_res_cd: handled.answered.ack_res_cd,
        ack_body: handled.answered.ack_body,
        at: now(),
    };
    match (conn, handled.note) {
        (AnyConnection::Postgresql(c), Some(note)) => {
            NotedDeliveryFinish { note, finish }.execute(c)?;
        }
        (conn, note) => {
            if let Some(note) = note {
                orders::add_note(conn, note.order_id, note.event, note.cause)?;
            }
            on_backend!(conn, c => finish.execute(c))?;
        }
    }
    Ok(())
}

/// What an approval notification's order must be for its delivery to be accepted by
/// [`accept_approval`], and what is written then.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedApproval<'a> {
    pub dedupe_key: &'a str,
    pub order_no: &'a ShopOrderNo,
    pub pay_method: &'a str,
    /// The notification's pgCno: the order's must be the same, or none yet.
    pub pg_cno: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    /// The statuses of an order waiting for its approval.
    pub statuses: [&'a str; 3],
    /// A resend's answer (outcome `duplicate`), which is also the accepted one's.
    pub duplicate: Answered<'a>,
    /// The accepted delivery's outcome.
    pub accepted: &'a str,
    /// The accepted delivery's note on its order's timeline.
    pub event: &'a str,
    pub cause: &'a str,
}

/// How [`accept_approval`] stored a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A delivery of its key was applied before: stored answered as a duplicate.
    Duplicate { id: i64 },
    /// Stored applied, with its order, its note and its ack.
    Applied { id: i64, order_id: i64 },
}

/// PostgreSQL: an approval delivery stored, handled and answered in one statement of its own
/// ([`ApprovalAccept`]), one round trip, when it is a resend of an applied key or its order is
/// as `expected`; `None` (nothing written) otherwise, and always on SQLite, whose writer has
/// no round trips to save: the caller then stores it in a transaction
/// ([`insert_unless_applied`], [`finish`]), which writes the same in those two cases. An
/// error also leaves nothing written, the statement being its own transaction.
pub fn accept_approval(
    conn: &mut AnyConnection,
    new: &NewDelivery<'_>,
    expected: &ExpectedApproval<'_>,
) -> Result<Option<Accepted>, DbError> {
    let AnyConnection::Postgresql(c) = conn else {
        return Ok(None);
    };
    let statement = ApprovalAccept {
        delivery: new,
        at: now(),
        expected,
    };
    let row = statement
        .get_result::<(i64, bool, Option<i64>)>(c)
        .optional()?;
    row.map(|(id, applied, order_id)| match (applied, order_id) {
        (false, _) => Ok(Accepted::Duplicate { id }),
        (true, Some(order_id)) => Ok(Accepted::Applied { id, order_id }),
        // An applied delivery is stored only with the order it found.
        (true, None) => Err(DbError::Corrupt(format!(
            "delivery {id} accepted without its order"
        ))),
    })
    .transpose()
}

pub fn find(conn: &mut AnyConnection, id: i64) -> Result<Option<Delivery>, DbError> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .select(Delivery::as_select())
        .get_result(conn)
        .optional()?)
}

/// Every delivery, oldest first (tests and small audits).
pub fn all(conn: &mut AnyConnection) -> Result<Vec<Delivery>, DbError> {
    Ok(webhook_deliveries::table
        .order(webhook_deliveries::id.asc())
        .select(Delivery::as_select())
        .load(conn)?)
}

/// Deliveries of one order, oldest first (the order timeline).
pub fn for_order(conn: &mut AnyConnection, order_id: i64) -> Result<Vec<Delivery>, DbError> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::order_id.eq(order_id))
        .order(webhook_deliveries::id.asc())
        .select(Delivery::as_select())
        .load(conn)?)
}

/// Deliveries about one order, oldest first: those matched to it, and those naming its pgCno
/// that were never matched (refused at the door: a stranger's IP, a bad body).
pub fn about_order(
    conn: &mut AnyConnection,
    order_id: i64,
    pg_cno: Option<&str>,
) -> Result<Vec<Delivery>, DbError> {
    let mut query = webhook_deliveries::table
        .filter(webhook_deliveries::order_id.eq(order_id))
        .into_boxed();
    if let Some(pg_cno) = pg_cno {
        query = query.or_filter(
            webhook_deliveries::order_id
                .is_null()
                .and(webhook_deliveries::pg_cno.eq(pg_cno.to_owned())),
        );
    }
    Ok(query
        .order(webhook_deliveries::id.asc())
        .select(Delivery::as_select())
        .load(conn)?)
}

/// Deliveries received at or after `since`, oldest first (the review's run-wide checks).
pub fn received_since(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> Result<Vec<Delivery>, DbError> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::received_at.ge(since))
        .order(webhook_deliveries::id.asc())
        .select(Delivery::as_select())
        .load(conn)?)
}

/// Deliveries that matched no order, newest first (the dashboard's unmatched list).
pub fn unmatched(conn: &mut AnyConnection, limit: i64) -> Result<Vec<Delivery>, DbError> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::outcome.eq("unmatched"))
        .order(webhook_deliveries::id.desc())
        .limit(limit)
        .select(Delivery::as_select())
        .load(conn)?)
}

/// A delivery accepted on its face and then not confirmed by KICC (a cancellation
/// notification whose status check does not show the cancel): kept as `unmatched` (the
/// dashboard's list), its claim on the key released so that KICC's own delivery of the key
/// can still be applied. Returns whether a delivery was released.
pub fn release_unconfirmed(conn: &mut AnyConnection, dedupe_key: &str) -> Result<bool, DbError> {
    let released = on_backend!(conn, c => diesel::update(webhook_deliveries::table
        .filter(webhook_deliveries::dedupe_key.eq(dedupe_key))
        .filter(webhook_deliveries::applied.eq(true)))
        .set((
            webhook_deliveries::applied.eq(false),
            webhook_deliveries::outcome.eq("unmatched"),
        ))
        .execute(c))?;
    Ok(released > 0)
}

/// The outcomes of deliveries that changed nothing and are kept only for a while
/// (`WEBHOOK_REFUSED_RETENTION_DAYS`): `refused` (a source not allowed) and `rejected` (an
/// allowed source's body we could not take: too large, not JSON, malformed).
pub const PURGED_OUTCOMES: [&str; 2] = ["refused", "rejected"];

/// Deletes at most `batch` refused or rejected deliveries received before `before`, oldest
/// first, and returns how many. Every other delivery (applied, duplicate, unmatched, …) is the
/// record of a notification about money and is kept. Batched so one call holds the write lock
/// briefly: the caller repeats while a whole batch was deleted.
pub fn purge_refused(
    conn: &mut AnyConnection,
    before: NaiveDateTime,
    batch: i64,
) -> Result<usize, DbError> {
    // Two statements (the ids, then the delete): diesel cannot put a table in a subquery of its
    // own delete. The caller's write transaction keeps them together.
    let oldest: Vec<i64> = on_backend!(conn, c => webhook_deliveries::table
        .filter(webhook_deliveries::outcome.eq_any(PURGED_OUTCOMES))
        .filter(webhook_deliveries::received_at.lt(before))
        .order(webhook_deliveries::id.asc())
        .select(webhook_deliveries::id)
        .limit(batch)
        .load(c))?;
    if oldest.is_empty() {
        return Ok(0);
    }
    Ok(on_backend!(conn, c => diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::id.eq_any(&oldest))
            .filter(webhook_deliveries::outcome.eq_any(PURGED_OUTCOMES))
    )
    .execute(c))?)
}
