//! `gateway_calls`: every outbound call to KICC, written before it is sent and completed after
//! (DESIGN §4, §6). Bodies arrive here already redacted by the client.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::fixed::CallCompletionUpdate;
use super::schema::gateway_calls;
use super::{AnyConnection, DbError, now, on_backend, write_transaction};

#[derive(Insertable)]
#[diesel(table_name = gateway_calls, treat_none_as_default_value = false)]
struct NewCallRow<'a> {
    order_id: Option<i64>,
    api: &'a str,
    shop_transaction_id: &'a str,
    request_date: &'a str,
    request_body: &'a str,
    requested_at: NaiveDateTime,
}

/// A call about to be sent.
#[derive(Debug, Clone)]
pub struct NewGatewayCall<'a> {
    pub order_id: Option<i64>,
    /// Which API (`wechat_create`, `approval_v2`, …).
    pub api: &'a str,
    /// The idempotency key sent with the call (for KICC Pay, the request nonce).
    pub shop_transaction_id: &'a str,
    /// yyyyMMdd (KST) of the request: `retrieveTransaction` needs it with the key.
    pub request_date: &'a str,
    /// The request body with secrets, tokenKey and authorizationId masked.
    pub request_body: &'a str,
}

/// How a call ended: written onto its row ([`complete_in_tx`]), or with a deferred call's
/// whole record ([`DeferredCall`]).
#[derive(Debug, Clone)]
pub struct CallCompletion {
    pub response_body: Option<String>,
    pub http_status: Option<i32>,
    pub outcome: &'static str,
    pub res_cd: Option<String>,
    pub res_msg: Option<String>,
    pub pg_cno: Option<String>,
    pub latency_ms: i64,
}

/// A stored call.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = gateway_calls)]
pub struct GatewayCall {
    pub id: i64,
    pub order_id: Option<i64>,
    pub api: String,
    pub shop_transaction_id: String,
    pub request_date: String,
    pub request_body: String,
    pub response_body: Option<String>,
    pub http_status: Option<i32>,
    pub outcome: Option<String>,
    pub res_cd: Option<String>,
    pub res_msg: Option<String>,
    pub pg_cno: Option<String>,
    pub latency_ms: Option<i64>,
    pub requested_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
}

/// Records a call before it is sent; returns its id. (In a write transaction, like every write:
/// on SQLite that queues it in the process's writer lane, see `write_transaction`.)
pub fn insert_started(conn: &mut AnyConnection, call: &NewGatewayCall<'_>) -> Result<i64, DbError> {
    write_transaction(conn, |conn| insert_started_in_tx(conn, call))
}

/// [`insert_started`] inside the caller's write transaction (the call's row in the same commit
/// as what it is about).
pub fn insert_started_in_tx(
    conn: &mut AnyConnection,
    call: &NewGatewayCall<'_>,
) -> Result<i64, DbError> {
    let row = NewCallRow {
        order_id: call.order_id,
        api: call.api,
        shop_transaction_id: call.shop_transaction_id,
        request_date: call.request_date,
        request_body: call.request_body,
        requested_at: now(),
    };
    Ok(
        on_backend!(conn, c => diesel::insert_into(gateway_calls::table)
        .values(&row)
        .returning(gateway_calls::id)
        .get_result(c))?,
    )
}

/// Records how a call ended, inside the caller's write transaction (with what the ending
/// changes).
pub fn complete_in_tx(
    conn: &mut AnyConnection,
    id: i64,
    done: &CallCompletion,
) -> Result<(), DbError> {
    let update = CallCompletionUpdate {
        id,
        done,
        at: now(),
    };
    let updated = on_backend!(conn, c => update.execute(c))?;
    if updated == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// One call by its idempotency key.
pub fn find_by_shop_transaction_id(
    conn: &mut AnyConnection,
    shop_transaction_id: &str,
) -> Result<Option<GatewayCall>, DbError> {
    Ok(gateway_calls::table
        .filter(gateway_calls::shop_transaction_id.eq(shop_transaction_id))
        .select(GatewayCall::as_select())
        .get_result(conn)
        .optional()?)
}

/// Every call of an order, oldest first (the order page's timeline).
pub fn for_order(conn: &mut AnyConnection, order_id: i64) -> Result<Vec<GatewayCall>, DbError> {
    Ok(gateway_calls::table
        .filter(gateway_calls::order_id.eq(order_id))
        .order(gateway_calls::id.asc())
        .select(GatewayCall::as_select())
        .load(conn)?)
}

/// Calls requested at or after `since`, oldest first (the review's run-wide checks).
pub fn requested_since(
    conn: &mut AnyConnection,
    since: NaiveDateTime,
) -> Result<Vec<GatewayCall>, DbError> {
    Ok(gateway_calls::table
        .filter(gateway_calls::requested_at.ge(since))
        .order(gateway_calls::id.asc())
        .select(GatewayCall::as_select())
        .load(conn)?)
}

/// Every call, oldest first (tests and audits of small databases).
pub fn all(conn: &mut AnyConnection) -> Result<Vec<GatewayCall>, DbError> {
    Ok(gateway_calls::table
        .order(gateway_calls::id.asc())
        .select(GatewayCall::as_select())
        .load(conn)?)
}

/// A call made while the database was unreachable (an in-process compensating cancel), kept in
/// memory and written whole once the database answers again.
#[derive(Debug, Clone)]
pub struct DeferredCall {
    pub order_id: Option<i64>,
    pub api: &'static str,
    pub shop_transaction_id: String,
    pub request_date: String,
    pub request_body: String,
    pub requested_at: NaiveDateTime,
    pub ending: CallCompletion,
    pub completed_at: NaiveDateTime,
}

/// Writes a deferred call, started and completed, in one insert. A call already written (its
/// key is unique) is left as it is.
pub fn insert_deferred(conn: &mut AnyConnection, call: &DeferredCall) -> Result<(), DbError> {
    if find_by_shop_transaction_id(conn, &call.shop_transaction_id)?.is_some() {
        return Ok(());
    }
    diesel::insert_into(gateway_calls::table)
        .values((
            gateway_calls::order_id.eq(call.order_id),
            gateway_calls::api.eq(call.api),
            gateway_calls::shop_transaction_id.eq(&call.shop_transaction_id),
            gateway_calls::request_date.eq(&call.request_date),
            gateway_calls::request_body.eq(&call.request_body),
            gateway_calls::requested_at.eq(call.requested_at),
            gateway_calls::response_body.eq(&call.ending.response_body),
            gateway_calls::http_status.eq(call.ending.http_status),
            gateway_calls::outcome.eq(call.ending.outcome),
            gateway_calls::res_cd.eq(&call.ending.res_cd),
            gateway_calls::res_msg.eq(&call.ending.res_msg),
            gateway_calls::pg_cno.eq(&call.ending.pg_cno),
            gateway_calls::latency_ms.eq(call.ending.latency_ms),
            gateway_calls::completed_at.eq(call.completed_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The reconciler settled what an unanswered (or unknown-ended) call left open.
pub fn mark_resolved(conn: &mut AnyConnection, id: i64) -> Result<(), DbError> {
    diesel::update(gateway_calls::table.filter(gateway_calls::id.eq(id)))
        .set((
            gateway_calls::resolved_at.eq(now()),
            gateway_calls::lease_owner.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: i64) -> Result<Option<GatewayCall>, DbError> {
    Ok(gateway_calls::table
        .filter(gateway_calls::id.eq(id))
        .select(GatewayCall::as_select())
        .get_result(conn)
        .optional()?)
}
