//! The dashboard's queries: the filtered, searched order list with keyset pagination (fast at a
//! million orders: it walks the `(created_at, id)` index), and the home page's totals.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};

use super::schema::{compensations, orders, webhook_deliveries};
use super::{AnyConnection, DbError};
use crate::domain::Order;

/// The list's filter (every part optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub status: Option<String>,
    pub pay_method: Option<String>,
    pub currency: Option<String>,
    /// Created at or after (UTC).
    pub from: Option<NaiveDateTime>,
    /// Created before (UTC).
    pub to: Option<NaiveDateTime>,
    /// shopOrderNo, pgCno or cancelPgCno (exact), customer email (exact) or name (contains).
    pub query: Option<String>,
    /// Oldest first (default: newest first).
    pub oldest_first: bool,
}

/// Where the next page starts: the last row's `(created_at, id)` in the list's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: NaiveDateTime,
    pub id: i64,
}

impl Cursor {
    /// `"{micros since epoch}.{id}"`, opaque to people, stable in URLs.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}",
            self.created_at.and_utc().timestamp_micros(),
            self.id
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (micros, id) = s.split_once('.')?;
        let created_at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?.naive_utc();
        Some(Self {
            created_at,
            id: id.parse().ok()?,
        })
    }
}

type Boxed<'a> = orders::BoxedQuery<'a, super::MultiBackend>;

fn filtered<'a>(filter: &'a OrderFilter, matching_ids: Option<Vec<i64>>) -> Boxed<'a> {
    let mut query = orders::table.into_boxed();
    if let Some(status) = &filter.status {
        query = query.filter(orders::status.eq(status));
    }
    if let Some(method) = &filter.pay_method {
        query = query.filter(orders::pay_method.eq(method));
    }
    if let Some(currency) = &filter.currency {
        query = query.filter(orders::currency.eq(currency));
    }
    if let Some(from) = filter.from {
        query = query.filter(orders::created_at.ge(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(orders::created_at.lt(to));
    }
    if let Some(ids) = matching_ids {
        query = query.filter(orders::id.eq_any(ids));
    }
    query
}

/// The orders a search text names. Exact keys first (each an index lookup); only when none
/// matches, a name search (`LIKE`, a scan: names are not indexed).
fn search(conn: &mut AnyConnection, text: &str) -> Result<Vec<i64>, DbError> {
    let text = text.trim();
    let mut ids: Vec<i64> = orders::table
        .filter(
            orders::shop_order_no
                .eq(text)
                .or(orders::pg_cno.eq(text))
                .or(orders::customer_mail.eq(text)),
        )
        .select(orders::id)
        .limit(500)
        .load(conn)?;
    ids.extend(
        webhook_deliveries::table
            // Applied cancellations only (the others name no order): the unique index on
            // applied keys (kind, dedupe_key) WHERE applied finds them.
            .filter(webhook_deliveries::kind.eq("cancel"))
            .filter(webhook_deliveries::dedupe_key.eq(text))
            .filter(webhook_deliveries::applied)
            .filter(webhook_deliveries::order_id.is_not_null())
            .select(webhook_deliveries::order_id.assume_not_null())
            .load::<i64>(conn)?,
    );
    ids.extend(
        compensations::table
            .filter(compensations::cancel_pg_cno.eq(text))
            .select(compensations::order_id)
            .load::<i64>(conn)?,
    );
    if ids.is_empty() && !text.is_empty() {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        ids = orders::table
            .filter(orders::customer_name.like(pattern).escape('\\'))
            .select(orders::id)
            .order(orders::id.desc())
            .limit(500)
            .load(conn)?;
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// One page, newest first: up to `limit` orders and the cursor of the next page.
pub fn list(
    conn: &mut AnyConnection,
    filter: &OrderFilter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<Order>, Option<Cursor>), DbError> {
    let matching = match filter.query.as_deref().filter(|q| !q.trim().is_empty()) {
        Some(q) => Some(search(conn, q)?),
        None => None,
    };
    let mut query = filtered(filter, matching);
    // The cursor's own bound comes first (`created_at <= c`, or `>=` oldest first): the index
    // range starts at the cursor instead of the end (the plain `a < x OR (a = x AND b < y)` form
    // made both engines walk the skipped rows).
    query = match (before, filter.oldest_first) {
        (None, _) => query,
        (Some(c), false) => query
            .filter(orders::created_at.le(c.created_at))
            .filter(orders::created_at.lt(c.created_at).or(orders::id.lt(c.id))),
        (Some(c), true) => query
            .filter(orders::created_at.ge(c.created_at))
            .filter(orders::created_at.gt(c.created_at).or(orders::id.gt(c.id))),
    };
    let query = if filter.oldest_first {
        query.order((orders::created_at.asc(), orders::id.asc()))
    } else {
        query.order((orders::created_at.desc(), orders::id.desc()))
    };
    let ids: Vec<(i64, NaiveDateTime)> = query
        .limit(limit + 1)
        .select((orders::id, orders::created_at))
        .load(conn)?;
    let next = (ids.len() as i64 > limit).then(|| {
        let (id, created_at) = ids[limit as usize - 1];
        Cursor { created_at, id }
    });
    let mut page = Vec::with_capacity(ids.len());
    for (id, _) in ids.into_iter().take(limit as usize) {
        if let Some(order) = super::orders::find_by_id(conn, id)? {
            page.push(order);
        }
    }
    Ok((page, next))
}

/// Every order of the filter, in pages (the CSV export walks them).
pub fn page_for_export(
    conn: &mut AnyConnection,
    filter: &OrderFilter,
    before: Option<Cursor>,
) -> Result<(Vec<Order>, Option<Cursor>), DbError> {
    list(conn, filter, before, 500)
}

#[derive(QueryableByName, Debug)]
pub struct CurrencyTotal {
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

#[derive(QueryableByName, Debug)]
pub struct DailyTotal {
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub total: i64,
}

fn placeholder(conn: &AnyConnection) -> &'static str {
    match conn {
        AnyConnection::Postgresql(_) => "$1",
        AnyConnection::Sqlite(_) => "?",
    }
}

/// Paid volume and count per currency for orders paid since `since`.
pub fn paid_since(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> Result<Vec<CurrencyTotal>, DbError> {
    let p = placeholder(conn);
    Ok(diesel::sql_query(format!(
        "SELECT currency, CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total, COUNT(*) AS count \
         FROM orders WHERE paid_at >= {p} GROUP BY currency ORDER BY currency"
    ))
    .bind::<Timestamp, _>(since)
    .load(conn)?)
}

/// Cancelled volume per currency for orders updated since `since` (count: orders).
pub fn cancelled_since(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> Result<Vec<CurrencyTotal>, DbError> {
    let p = placeholder(conn);
    Ok(diesel::sql_query(format!(
        "SELECT currency, CAST(COALESCE(SUM(cancelled_amount), 0) AS BIGINT) AS total, COUNT(*) AS count \
         FROM orders WHERE cancelled_amount > 0 AND updated_at >= {p} GROUP BY currency ORDER BY currency"
    ))
    .bind::<Timestamp, _>(since)
    .load(conn)?)
}

/// Orders created since `since`.
pub fn created_since(conn: &mut AnyConnection, since: NaiveDateTime) -> Result<i64, DbError> {
    Ok(orders::table
        .filter(orders::created_at.ge(since))
        .count()
        .get_result(conn)?)
}

/// Orders a person must look at.
pub fn needing_attention(conn: &mut AnyConnection) -> Result<i64, DbError> {
    Ok(orders::table
        .filter(orders::status.eq("needs_attention"))
        .count()
        .get_result(conn)?)
}

/// Paid volume per UTC day and currency since `since` (the home chart).
pub fn daily_paid(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> Result<Vec<DailyTotal>, DbError> {
    let p = placeholder(conn);
    Ok(diesel::sql_query(format!(
        "SELECT substr(CAST(paid_at AS TEXT), 1, 10) AS day, currency, CAST(SUM(amount) AS BIGINT) AS total \
         FROM orders WHERE paid_at >= {p} GROUP BY substr(CAST(paid_at AS TEXT), 1, 10), currency ORDER BY day"
    ))
    .bind::<Timestamp, _>(since)
    .load(conn)?)
}
