//! `compensations`: cancel jobs — the saga's compensating cancels and the merchant's cancels —
//! written before their first call, so an attempt that dies with the process is retried
//! (DESIGN §4). Each attempt uses its own `shopTransactionId`; `cancelReqDate` stays the first
//! attempt's (spec 06).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::compensations;
use super::{AnyConnection, DbError, now};

/// Job states.
pub mod status {
    /// Due for an attempt (first, or retry after a failure).
    pub const PENDING: &str = "pending";
    /// KICC accepted the cancel; confirmation (webhook or cancel status check) outstanding.
    pub const REQUESTED: &str = "requested";
    /// KICC confirmed the cancel.
    pub const CONFIRMED: &str = "confirmed";
    /// Given up after too many failures: a person must look.
    pub const FAILED: &str = "failed";
}

#[derive(Insertable)]
#[diesel(table_name = compensations, treat_none_as_default_value = false)]
struct NewRow<'a> {
    order_id: i64,
    origin: &'a str,
    reason: &'a str,
    api: &'a str,
    revise_type_code: Option<&'a str>,
    amount: i64,
    currency: &'a str,
    status: &'a str,
    attempts: i32,
    next_attempt_at: NaiveDateTime,
    gateway_call_id: Option<i64>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// A cancel job to record.
#[derive(Debug, Clone)]
pub struct NewCompensation<'a> {
    pub order_id: i64,
    /// `saga` (a compensating cancel) or `merchant` (from the dashboard).
    pub origin: &'a str,
    pub reason: &'a str,
    /// The cancel API (`wechat_revise`, `kiccpay_cancel`, `kiccpay_net_cancel`, …).
    pub api: &'a str,
    pub revise_type_code: Option<&'a str>,
    /// Minor units to cancel.
    pub amount: i64,
    pub currency: &'a str,
    /// The call this job undoes, where that matters (net-cancel resends its data).
    pub gateway_call_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = compensations)]
pub struct Compensation {
    pub id: i64,
    pub order_id: i64,
    pub origin: String,
    pub reason: String,
    pub api: String,
    pub revise_type_code: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub last_shop_transaction_id: Option<String>,
    pub cancel_req_date: Option<String>,
    pub cancel_pg_cno: Option<String>,
    pub created_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
    pub gateway_call_id: Option<i64>,
}

pub fn insert(conn: &mut AnyConnection, new: &NewCompensation<'_>) -> Result<i64, DbError> {
    let at = now();
    Ok(diesel::insert_into(compensations::table)
        .values(NewRow {
            order_id: new.order_id,
            origin: new.origin,
            reason: new.reason,
            api: new.api,
            revise_type_code: new.revise_type_code,
            amount: new.amount,
            currency: new.currency,
            status: status::PENDING,
            attempts: 0,
            next_attempt_at: at,
            gateway_call_id: new.gateway_call_id,
            created_at: at,
            updated_at: at,
        })
        .returning(compensations::id)
        .get_result(conn)?)
}

pub fn find(conn: &mut AnyConnection, id: i64) -> Result<Option<Compensation>, DbError> {
    Ok(compensations::table
        .filter(compensations::id.eq(id))
        .select(Compensation::as_select())
        .get_result(conn)
        .optional()?)
}

pub fn for_order(conn: &mut AnyConnection, order_id: i64) -> Result<Vec<Compensation>, DbError> {
    Ok(compensations::table
        .filter(compensations::order_id.eq(order_id))
        .order(compensations::id.asc())
        .select(Compensation::as_select())
        .load(conn)?)
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult<'a> {
    /// KICC accepted the cancel (WeChat Pay: requested, confirmation to follow).
    Requested { cancel_pg_cno: Option<&'a str> },
    /// Refused or unknown: try again at `retry_at`.
    Failed {
        error: &'a str,
        retry_at: NaiveDateTime,
    },
}

/// Records an attempt: its key and (first) cancel date, and how it ended.
pub fn record_attempt(
    conn: &mut AnyConnection,
    id: i64,
    shop_transaction_id: &str,
    cancel_req_date: &str,
    result: &AttemptResult<'_>,
) -> Result<(), DbError> {
    let at = now();
    // A job already confirmed (the cancellation webhook can be faster than the attempt's own
    // bookkeeping) keeps its state; the attempt is still counted.
    let target = compensations::table.filter(compensations::id.eq(id));
    if find(conn, id)?.is_some_and(|job| job.status == status::CONFIRMED) {
        diesel::update(target)
            .set((
                compensations::attempts.eq(compensations::attempts + 1),
                compensations::last_shop_transaction_id.eq(shop_transaction_id),
                compensations::updated_at.eq(at),
            ))
            .execute(conn)?;
        return Ok(());
    }
    // The first attempt's date is kept for every retry (spec 06).
    diesel::update(target.filter(compensations::cancel_req_date.is_null()))
        .set(compensations::cancel_req_date.eq(cancel_req_date))
        .execute(conn)?;
    let common = (
        compensations::attempts.eq(compensations::attempts + 1),
        compensations::last_shop_transaction_id.eq(shop_transaction_id),
        compensations::updated_at.eq(at),
    );
    let updated = match result {
        AttemptResult::Requested { cancel_pg_cno } => diesel::update(target)
            .set((
                common,
                compensations::status.eq(status::REQUESTED),
                compensations::cancel_pg_cno.eq(*cancel_pg_cno),
                compensations::last_error.eq(None::<String>),
            ))
            .execute(conn)?,
        AttemptResult::Failed { error, retry_at } => diesel::update(target)
            .set((
                common,
                compensations::status.eq(status::PENDING),
                compensations::last_error.eq(*error),
                compensations::next_attempt_at.eq(*retry_at),
            ))
            .execute(conn)?,
    };
    if updated == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// KICC confirmed the cancel. Returns false when the job was already confirmed (a second
/// confirmation — webhook after status check, or a duplicate — changes nothing).
pub fn mark_confirmed(
    conn: &mut AnyConnection,
    id: i64,
    cancel_pg_cno: Option<&str>,
) -> Result<bool, DbError> {
    let at = now();
    let updated = diesel::update(
        compensations::table
            .filter(compensations::id.eq(id))
            .filter(compensations::status.ne(status::CONFIRMED)),
    )
    .set((
        compensations::status.eq(status::CONFIRMED),
        compensations::completed_at.eq(at),
        compensations::updated_at.eq(at),
    ))
    .execute(conn)?;
    if let Some(cancel_pg_cno) = cancel_pg_cno {
        diesel::update(
            compensations::table
                .filter(compensations::id.eq(id))
                .filter(compensations::cancel_pg_cno.is_null()),
        )
        .set(compensations::cancel_pg_cno.eq(cancel_pg_cno))
        .execute(conn)?;
    }
    Ok(updated == 1)
}

/// The open job (not confirmed) a cancellation of `cancel_pg_cno` belongs to: the one that
/// recorded that cancelPgCno, else the oldest open job of the order.
pub fn open_for_cancel(
    conn: &mut AnyConnection,
    order_id: i64,
    cancel_pg_cno: &str,
) -> Result<Option<Compensation>, DbError> {
    let jobs = for_order(conn, order_id)?;
    let open = |j: &&Compensation| j.status != status::CONFIRMED;
    Ok(jobs
        .iter()
        .filter(open)
        .find(|j| j.cancel_pg_cno.as_deref() == Some(cancel_pg_cno))
        .or_else(|| jobs.iter().find(|j| open(j)))
        .cloned())
}

/// Too many failures: the job stops and waits for a person.
pub fn give_up(conn: &mut AnyConnection, id: i64, error: &str) -> Result<(), DbError> {
    let at = now();
    diesel::update(
        compensations::table
            .filter(compensations::id.eq(id))
            .filter(compensations::status.ne(status::CONFIRMED)),
    )
    .set((
        compensations::status.eq(status::FAILED),
        compensations::last_error.eq(error),
        compensations::updated_at.eq(at),
        compensations::lease_owner.eq(None::<String>),
        compensations::lease_until.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?;
    Ok(())
}

/// A requested cancel whose confirmation did not come: back to `pending` for another attempt.
pub fn reopen(conn: &mut AnyConnection, id: i64, retry_at: NaiveDateTime) -> Result<(), DbError> {
    diesel::update(
        compensations::table
            .filter(compensations::id.eq(id))
            .filter(compensations::status.eq(status::REQUESTED)),
    )
    .set((
        compensations::status.eq(status::PENDING),
        compensations::next_attempt_at.eq(retry_at),
        compensations::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(())
}

/// When to look at a requested cancel again if no confirmation arrives.
pub fn check_again_at(conn: &mut AnyConnection, id: i64, at: NaiveDateTime) -> Result<(), DbError> {
    diesel::update(compensations::table.filter(compensations::id.eq(id)))
        .set(compensations::next_attempt_at.eq(at))
        .execute(conn)?;
    Ok(())
}

/// Jobs per status (for `/metrics`).
pub fn count_by_status(conn: &mut AnyConnection) -> Result<Vec<(String, i64)>, DbError> {
    Ok(compensations::table
        .group_by(compensations::status)
        .select((compensations::status, diesel::dsl::count_star()))
        .load(conn)?)
}
