//! Orders, their lines and their timeline; and `transition`, the only writer of `orders.status`.
//!
//! A transition is a compare-and-set (`UPDATE orders SET status = to … WHERE id = ? AND
//! status = expected`) and its timeline row, in one write transaction. The returnUrl, both
//! webhooks, the reconciler and a second app instance may race for the same order: exactly one
//! of them moves it, the others learn the status it is in now.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::fixed::TransitionUpdate;
use super::schema::{order_events, order_items, orders};
use super::{AnyConnection, DbError, now, on_backend, write_transaction};
use crate::domain::{
    Currency, Customer, GoodsName, Money, Order, OrderEvent, OrderLine, OrderStatus, PayMethod,
    ShopOrderNo, TimelineEntry, TradeType, TransitionError,
};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = orders)]
pub(super) struct OrderRow {
    id: i64,
    shop_order_no: String,
    status: String,
    pay_method: String,
    currency: String,
    amount: i64,
    cancelled_amount: i64,
    goods_name: String,
    customer_id: String,
    customer_name: String,
    customer_mail: String,
    customer_contact_no: String,
    customer_addr: String,
    trade_type: Option<String>,
    pg_cno: Option<String>,
    payment_page_url: Option<String>,
    authorization_id: Option<String>,
    approval_no: Option<String>,
    approval_date: Option<String>,
    transaction_date: Option<String>,
    kicc_status_code: Option<String>,
    expires_at: Option<NaiveDateTime>,
    paid_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TryFrom<OrderRow> for Order {
    type Error = DbError;

    fn try_from(row: OrderRow) -> Result<Self, DbError> {
        let id = row.id;
        let corrupt =
            move |e: crate::domain::ValidationError| DbError::Corrupt(format!("order {id}: {e}"));
        let currency: Currency = row.currency.parse().map_err(corrupt)?;
        Ok(Order {
            id,
            shop_order_no: ShopOrderNo::parse(&row.shop_order_no).map_err(corrupt)?,
            status: row.status.parse().map_err(corrupt)?,
            pay_method: row.pay_method.parse().map_err(corrupt)?,
            amount: Money::from_minor(row.amount, currency).map_err(corrupt)?,
            cancelled: Money::from_minor(row.cancelled_amount, currency).map_err(corrupt)?,
            goods_name: row.goods_name,
            customer_id: row.customer_id,
            customer_name: row.customer_name,
            customer_mail: row.customer_mail,
            customer_contact_no: row.customer_contact_no,
            customer_addr: row.customer_addr,
            trade_type: row
                .trade_type
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(corrupt)?,
            pg_cno: row.pg_cno,
            payment_page_url: row.payment_page_url,
            authorization_id: row.authorization_id,
            approval_no: row.approval_no,
            approval_date: row.approval_date,
            transaction_date: row.transaction_date,
            kicc_status_code: row.kicc_status_code,
            expires_at: row.expires_at,
            paid_at: row.paid_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = orders, treat_none_as_default_value = false)]
struct NewOrderRow<'a> {
    shop_order_no: &'a str,
    status: &'a str,
    pay_method: &'a str,
    currency: &'a str,
    amount: i64,
    cancelled_amount: i64,
    goods_name: &'a str,
    customer_id: &'a str,
    customer_name: &'a str,
    customer_mail: &'a str,
    customer_contact_no: &'a str,
    customer_addr: &'a str,
    trade_type: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    idempotency_scope: Option<&'a str>,
    request_hash: Option<&'a str>,
    expires_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = order_items, treat_none_as_default_value = false)]
struct NewOrderItemRow<'a> {
    order_id: i64,
    sku: &'a str,
    name: &'a str,
    unit_price: i64,
    quantity: i32,
    line_total: i64,
}

#[derive(Insertable)]
#[diesel(table_name = order_events, treat_none_as_default_value = false)]
struct NewOrderEventRow<'a> {
    order_id: i64,
    event: &'a str,
    from_status: Option<&'a str>,
    to_status: Option<&'a str>,
    cause: &'a str,
    created_at: NaiveDateTime,
}

/// An idempotency key as stored beside its order: unique per scope (the client), with the hash
/// of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client: `ip:ADDRESS` (JSON API) or `browser:HASH` (the shop's form).
    pub scope: String,
    /// The client's own key (at most 64 characters).
    pub key: String,
    /// SHA-256 (hex) of the canonical request (`checkout::OrderRequest::request_hash`).
    pub request_hash: String,
}

/// An order to create: every field already parsed, the amount equal to the sum of its lines.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub shop_order_no: ShopOrderNo,
    pub pay_method: PayMethod,
    pub trade_type: Option<TradeType>,
    pub goods_name: GoodsName,
    pub customer: Customer,
    pub lines: Vec<OrderLine>,
    /// A client's key (the checkout form's, or an API client's): a second request of the same
    /// client with the same key and body finds the first order.
    pub idempotency_key: Option<Idempotency>,
    pub expires_at: Option<NaiveDateTime>,
}

impl NewOrder {
    /// The order's amount: the sum of its lines, in their (single) currency.
    pub fn amount(&self) -> Result<Money, DbError> {
        let first = self
            .lines
            .first()
            .ok_or_else(|| DbError::Corrupt("an order needs at least one line".into()))?;
        self.lines
            .iter()
            .try_fold(Money::zero(first.unit_price.currency()), |sum, line| {
                sum.checked_add(line.line_total).ok_or_else(|| {
                    DbError::Corrupt("order lines mix currencies or overflow".into())
                })
            })
    }
}

/// Saves a new order in status `created` with its lines and the first timeline row.
pub fn insert(conn: &mut AnyConnection, new: &NewOrder, cause: &str) -> Result<Order, DbError> {
    write_transaction(conn, |conn| insert_in_tx(conn, new, cause))
}

/// [`insert`] inside the caller's write transaction (the order and its first gateway call in
/// one commit). On PostgreSQL a failed insert aborts that transaction: the caller rolls back.
pub fn insert_in_tx(
    conn: &mut AnyConnection,
    new: &NewOrder,
    cause: &str,
) -> Result<Order, DbError> {
    let amount = new.amount()?;
    let at = now();
    let row = NewOrderRow {
        shop_order_no: new.shop_order_no.as_str(),
        status: OrderStatus::Created.as_str(),
        pay_method: new.pay_method.as_str(),
        currency: amount.currency().code(),
        amount: amount.minor(),
        cancelled_amount: 0,
        goods_name: new.goods_name.as_str(),
        customer_id: new.customer.id.as_str(),
        customer_name: new.customer.name.as_str(),
        customer_mail: new.customer.mail.as_str(),
        customer_contact_no: new.customer.contact_no.as_str(),
        customer_addr: new.customer.addr.as_str(),
        trade_type: new.trade_type.map(TradeType::as_str),
        idempotency_key: new.idempotency_key.as_ref().map(|k| k.key.as_str()),
        idempotency_scope: new.idempotency_key.as_ref().map(|k| k.scope.as_str()),
        request_hash: new
            .idempotency_key
            .as_ref()
            .map(|k| k.request_hash.as_str()),
        expires_at: new.expires_at,
        created_at: at,
        updated_at: at,
    };
    let saved: OrderRow = on_backend!(conn, c => diesel::insert_into(orders::table)
        .values(&row)
        .returning(OrderRow::as_returning())
        .get_result(c))?;
    let id = saved.id;
    for line in &new.lines {
        let item = NewOrderItemRow {
            order_id: id,
            sku: &line.sku,
            name: &line.name,
            unit_price: line.unit_price.minor(),
            quantity: line.quantity,
            line_total: line.line_total.minor(),
        };
        on_backend!(conn, c => diesel::insert_into(order_items::table).values(&item).execute(c))?;
    }
    let event = NewOrderEventRow {
        order_id: id,
        event: "order_created",
        from_status: None,
        to_status: Some(OrderStatus::Created.as_str()),
        cause,
        created_at: at,
    };
    on_backend!(conn, c => diesel::insert_into(order_events::table).values(&event).execute(c))?;
    Order::try_from(saved)
}

pub fn find_by_id(conn: &mut AnyConnection, id: i64) -> Result<Option<Order>, DbError> {
    on_backend!(conn, c => orders::table
        .filter(orders::id.eq(id))
        .select(OrderRow::as_select())
        .get_result(c)
        .optional())?
    .map(Order::try_from)
    .transpose()
}

pub fn find_by_shop_order_no(
    conn: &mut AnyConnection,
    shop_order_no: &ShopOrderNo,
) -> Result<Option<Order>, DbError> {
    on_backend!(conn, c => orders::table
        .filter(orders::shop_order_no.eq(shop_order_no.as_str()))
        .select(OrderRow::as_select())
        .get_result(c)
        .optional())?
    .map(Order::try_from)
    .transpose()
}

/// The order a client (`scope`) placed with `key`, and the hash of the request that placed it
/// (`None` only for keys stored before requests were hashed). Another client's key finds
/// nothing.
pub fn find_by_idempotency_key(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> Result<Option<(Order, Option<String>)>, DbError> {
    on_backend!(conn, c => orders::table
        .filter(orders::idempotency_scope.eq(scope))
        .filter(orders::idempotency_key.eq(key))
        .select((OrderRow::as_select(), orders::request_hash))
        .get_result::<(OrderRow, Option<String>)>(c)
        .optional())?
    .map(|(row, hash)| Ok((Order::try_from(row)?, hash)))
    .transpose()
}

/// The order's lines, in the order they were added.
pub fn lines(conn: &mut AnyConnection, order: &Order) -> Result<Vec<OrderLine>, DbError> {
    let currency = order.amount.currency();
    order_items::table
        .filter(order_items::order_id.eq(order.id))
        .order(order_items::id.asc())
        .select((
            order_items::sku,
            order_items::name,
            order_items::unit_price,
            order_items::quantity,
            order_items::line_total,
        ))
        .load::<(String, String, i64, i32, i64)>(conn)?
        .into_iter()
        .map(|(sku, name, unit_price, quantity, line_total)| {
            let money = |minor| {
                Money::from_minor(minor, currency)
                    .map_err(|e| DbError::Corrupt(format!("order {} line {sku}: {e}", order.id)))
            };
            Ok(OrderLine {
                unit_price: money(unit_price)?,
                line_total: money(line_total)?,
                sku,
                name,
                quantity,
            })
        })
        .collect()
}

/// The order's timeline (status transitions and notes), oldest first.
pub fn timeline(conn: &mut AnyConnection, order_id: i64) -> Result<Vec<TimelineEntry>, DbError> {
    let parse = |s: Option<String>| -> Result<Option<OrderStatus>, DbError> {
        s.map(|s| {
            s.parse()
                .map_err(|e| DbError::Corrupt(format!("order {order_id}: {e}")))
        })
        .transpose()
    };
    order_events::table
        .filter(order_events::order_id.eq(order_id))
        .order(order_events::id.asc())
        .select((
            order_events::id,
            order_events::event,
            order_events::from_status,
            order_events::to_status,
            order_events::cause,
            order_events::created_at,
        ))
        .load::<(
            i64,
            String,
            Option<String>,
            Option<String>,
            String,
            NaiveDateTime,
        )>(conn)?
        .into_iter()
        .map(|(id, event, from, to, cause, created_at)| {
            Ok(TimelineEntry {
                id,
                event,
                from_status: parse(from)?,
                to_status: parse(to)?,
                cause,
                created_at,
            })
        })
        .collect()
}

/// A timeline note that is not a status change, to write with another statement
/// (`webhook_deliveries::finish`); [`add_note`] writes one alone.
#[derive(Debug, Clone, Copy)]
pub struct Note<'a> {
    pub order_id: i64,
    pub event: &'a str,
    pub cause: &'a str,
}

/// Writes a timeline note that is not a status change (e.g. "amount mismatch detected").
pub fn add_note(
    conn: &mut AnyConnection,
    order_id: i64,
    event: &str,
    cause: &str,
) -> Result<(), DbError> {
    let row = NewOrderEventRow {
        order_id,
        event,
        from_status: None,
        to_status: None,
        cause,
        created_at: now(),
    };
    on_backend!(conn, c => diesel::insert_into(order_events::table).values(&row).execute(c))?;
    Ok(())
}

/// Fields written together with a status change (only the `Some` ones are set).
#[derive(Debug, Clone, Default)]
pub struct OrderPatch {
    pub pg_cno: Option<String>,
    pub payment_page_url: Option<String>,
    pub trade_type: Option<String>,
    pub authorization_id: Option<String>,
    pub approval_no: Option<String>,
    pub approval_date: Option<String>,
    pub transaction_date: Option<String>,
    pub kicc_status_code: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub paid_at: Option<NaiveDateTime>,
}

/// A transition to apply: from `expected`, by `event`, for a recorded `cause`.
#[derive(Debug, Clone)]
pub struct Transition {
    pub order_id: i64,
    pub expected: OrderStatus,
    pub event: OrderEvent,
    pub cause: String,
    pub patch: OrderPatch,
    /// `(expected, new)` cancelled amount in minor units, compared-and-set with the status so
    /// two partial cancels settling at once cannot both count from the same total.
    pub cancelled_amount: Option<(i64, i64)>,
}

impl Transition {
    pub fn new(
        order_id: i64,
        expected: OrderStatus,
        event: OrderEvent,
        cause: impl Into<String>,
    ) -> Self {
        Self {
            order_id,
            expected,
            event,
            cause: cause.into(),
            patch: OrderPatch::default(),
            cancelled_amount: None,
        }
    }

    pub fn with_patch(mut self, patch: OrderPatch) -> Self {
        self.patch = patch;
        self
    }

    pub fn with_cancelled_amount(mut self, expected: i64, new: i64) -> Self {
        self.cancelled_amount = Some((expected, new));
        self
    }
}

/// What became of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// This call moved the order; `event_id` is its timeline row.
    Applied {
        from: OrderStatus,
        to: OrderStatus,
        event_id: i64,
    },
    /// The order was no longer in the expected status (or cancelled amount): someone else moved
    /// it first. Nothing was written.
    Lost { current: OrderStatus },
    /// The transition table does not allow this event from the expected status. Nothing written.
    NotAllowed(TransitionError),
}

impl TransitionOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, TransitionOutcome::Applied { .. })
    }
}

/// Applies one transition as a compare-and-set and records it in the timeline, in one write
/// transaction. The only code that changes `orders.status` after an order is created.
pub fn transition(conn: &mut AnyConnection, t: &Transition) -> Result<TransitionOutcome, DbError> {
    write_transaction(conn, |conn| transition_in_tx(conn, t))
}

/// [`transition`] inside the caller's write transaction (with the gateway call's ending that
/// caused it, in one commit).
pub fn transition_in_tx(
    conn: &mut AnyConnection,
    t: &Transition,
) -> Result<TransitionOutcome, DbError> {
    let to = match t.expected.next(t.event) {
        Ok(to) => to,
        Err(e) => return Ok(TransitionOutcome::NotAllowed(e)),
    };
    let at = now();
    let updated = match t.cancelled_amount {
        Some(_) => on_backend!(conn, c => TransitionUpdate::<true> { t, to: to.as_str(), at }
            .execute(c))?,
        None => on_backend!(conn, c => TransitionUpdate::<false> { t, to: to.as_str(), at }
            .execute(c))?,
    };
    if updated == 0 {
        let current: Option<String> = on_backend!(conn, c => orders::table
            .filter(orders::id.eq(t.order_id))
            .select(orders::status)
            .get_result(c)
            .optional())?;
        let current = current.ok_or(DbError::NotFound)?;
        let current = current
            .parse()
            .map_err(|e| DbError::Corrupt(format!("order {}: {e}", t.order_id)))?;
        return Ok(TransitionOutcome::Lost { current });
    }
    let event = NewOrderEventRow {
        order_id: t.order_id,
        event: t.event.name(),
        from_status: Some(t.expected.as_str()),
        to_status: Some(to.as_str()),
        cause: &t.cause,
        created_at: at,
    };
    let event_id: i64 = on_backend!(conn, c => diesel::insert_into(order_events::table)
        .values(&event)
        .returning(order_events::id)
        .get_result(c))?;
    if matches!(to, OrderStatus::Expired | OrderStatus::Failed) {
        schedule_late_check(conn, t.order_id, Some(at + LATE_CHECKS[0]))?;
    }
    Ok(TransitionOutcome::Applied {
        from: t.expected,
        to,
        event_id,
    })
}

/// Applies `event` to the order in whatever status it is in now: reads the status, then
/// compare-and-sets from it; if another writer moved the order in between, reads again (a few
/// times). For callers that do not know the status (a webhook, the reconciler).
pub fn apply_event(
    conn: &mut AnyConnection,
    order_id: i64,
    event: OrderEvent,
    cause: &str,
    patch: &OrderPatch,
) -> Result<TransitionOutcome, DbError> {
    let mut last = None;
    for _ in 0..5 {
        let current: String = on_backend!(conn, c => orders::table
            .filter(orders::id.eq(order_id))
            .select(orders::status)
            .get_result(c)
            .optional())?
        .ok_or(DbError::NotFound)?;
        let current: OrderStatus = current
            .parse()
            .map_err(|e| DbError::Corrupt(format!("order {order_id}: {e}")))?;
        let t = Transition::new(order_id, current, event, cause).with_patch(patch.clone());
        match transition(conn, &t)? {
            TransitionOutcome::Lost { current } => last = Some(current),
            outcome => return Ok(outcome),
        }
    }
    Ok(TransitionOutcome::Lost {
        current: last.unwrap_or(OrderStatus::Created),
    })
}

pub fn find_by_pg_cno(conn: &mut AnyConnection, pg_cno: &str) -> Result<Option<Order>, DbError> {
    on_backend!(conn, c => orders::table
        .filter(orders::pg_cno.eq(pg_cno))
        .select(OrderRow::as_select())
        .get_result(c)
        .optional())?
    .map(Order::try_from)
    .transpose()
}

/// Fills the approval number of a paid order that has none yet: the approval reply that lost
/// its race to the notification's status check (whose reply carries the approval date but not
/// the number) still gives the receipt its approval number. Never overwrites a stored one.
pub fn fill_approval(
    conn: &mut AnyConnection,
    order_id: i64,
    patch: &OrderPatch,
) -> Result<(), DbError> {
    let Some(no) = &patch.approval_no else {
        return Ok(());
    };
    on_backend!(conn, c => diesel::update(orders::table
        .filter(orders::id.eq(order_id))
        .filter(orders::status.eq(OrderStatus::Paid.as_str()))
        .filter(orders::approval_no.is_null()))
        .set(orders::approval_no.eq(no))
        .execute(c))?;
    Ok(())
}

/// Claims the right to send an outsider-triggered status check for this order now: true for
/// exactly one caller per `cooldown`, whichever instance it runs in (a compare-and-set on
/// `orders.status_checked_at`). A bare returnUrl replayed forty times asks KICC once.
pub fn claim_status_check(
    conn: &mut AnyConnection,
    order_id: i64,
    cooldown: chrono::TimeDelta,
) -> Result<bool, DbError> {
    let at = now();
    let before = at - cooldown;
    let claimed = on_backend!(conn, c => diesel::update(orders::table
        .filter(orders::id.eq(order_id))
        .filter(orders::status_checked_at.is_null().or(orders::status_checked_at.le(before))))
        .set(orders::status_checked_at.eq(at))
        .execute(c))?;
    Ok(claimed == 1)
}

/// The status the order left when a late payment for it was refunded (`late_refund_started`),
/// if one was: what the shopper's order page explains.
pub fn late_refund_from(
    conn: &mut AnyConnection,
    order_id: i64,
) -> Result<Option<OrderStatus>, DbError> {
    let from = on_backend!(conn, c => order_events::table
        .filter(order_events::order_id.eq(order_id))
        .filter(order_events::event.eq(OrderEvent::LateRefundStarted.name()))
        .order(order_events::id.desc())
        .select(order_events::from_status)
        .first::<Option<String>>(c)
        .optional())?
    .flatten();
    from.map(|s| {
        s.parse()
            .map_err(|e| DbError::Corrupt(format!("order {order_id}: {e}")))
    })
    .transpose()
}

/// When an order that expired or failed is checked again, counted from when it closed: WeChat's
/// code URLs stay valid for hours, so the checks stretch over a day, then stop.
pub const LATE_CHECKS: [chrono::TimeDelta; 5] = [
    chrono::TimeDelta::minutes(2),
    chrono::TimeDelta::minutes(15),
    chrono::TimeDelta::hours(1),
    chrono::TimeDelta::hours(6),
    chrono::TimeDelta::hours(24),
];

/// The late check after `now` of an order that closed at `closed` ([`LATE_CHECKS`]); `None`
/// when the schedule has ended.
pub fn next_late_check(closed: NaiveDateTime, now: NaiveDateTime) -> Option<NaiveDateTime> {
    LATE_CHECKS
        .iter()
        .map(|after| closed + *after)
        .find(|at| *at > now)
}

/// Sets (or, with `None`, ends) the order's next late check: when the reconciler asks KICC
/// again whether a WeChat order that expired or failed was paid after all. Only orders with a
/// WeChat trade get one (KICC Pay needs our approval call: it cannot be paid behind our back).
pub fn schedule_late_check(
    conn: &mut AnyConnection,
    order_id: i64,
    at: Option<NaiveDateTime>,
) -> Result<(), DbError> {
    on_backend!(conn, c => diesel::update(orders::table
        .filter(orders::id.eq(order_id))
        .filter(orders::pg_cno.is_not_null())
        .filter(orders::pay_method.eq(PayMethod::Wechat.as_str())))
        .set(orders::late_check_at.eq(at))
        .execute(c))?;
    Ok(())
}

/// A clock the review runner moves forward for one order, to stand in for the minutes a real
/// order waits (its own expiry, or its next late check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Expiry,
    LateCheck,
}

/// Makes the order's `due` clock come due now (see [`Due`]).
pub fn bring_forward(conn: &mut AnyConnection, order_id: i64, due: Due) -> Result<(), DbError> {
    let at = now() - chrono::TimeDelta::seconds(1);
    let target = orders::table.filter(orders::id.eq(order_id));
    match due {
        Due::Expiry => on_backend!(conn, c => diesel::update(target)
            .set(orders::expires_at.eq(at))
            .execute(c))?,
        Due::LateCheck => on_backend!(conn, c => diesel::update(target)
            .set(orders::late_check_at.eq(at))
            .execute(c))?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_checks_stretch_over_a_day_then_stop() {
        let closed = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let at = |minutes| closed + chrono::TimeDelta::minutes(minutes);
        assert_eq!(next_late_check(closed, closed), Some(at(2)));
        assert_eq!(next_late_check(closed, at(2)), Some(at(15)));
        assert_eq!(next_late_check(closed, at(16)), Some(at(60)));
        assert_eq!(next_late_check(closed, at(61)), Some(at(360)));
        assert_eq!(next_late_check(closed, at(361)), Some(at(1440)));
        assert_eq!(next_late_check(closed, at(1440)), None);
    }
}
