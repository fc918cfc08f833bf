//! Compensating cancels (the saga, DESIGN §4): when money may be held for an order that will not
//! be paid — amount mismatch, an untrustworthy reply, a failed database write after approval,
//! an approval whose answer was lost — the order moves to `compensating` and a `compensations`
//! row is written in the same transaction, before any cancel is sent. The first attempt runs
//! here, inline; the reconciler retries what does not finish.

use chrono::TimeDelta;

use super::Checkout;
use crate::db::compensations::{self, AttemptResult, NewCompensation};
use crate::db::orders::{self, OrderPatch, Transition, TransitionOutcome};
use crate::db::{DbError, now, write_transaction};
use crate::domain::{Order, OrderEvent, OrderStatus};
use crate::kicc::{CancelAmount, KiccPayTransmission, Outcome, TradeStatus};

/// Which cancel undoes the money.
#[derive(Debug, Clone)]
pub enum CancelPlan {
    /// WeChat Pay: `/api/trades/wechatpay/revise`, full cancel of the pgCno (DESIGN §4).
    WechatRevise { pg_cno: String, amount: i64 },
    /// KICC Pay, approved: `/smpy/kiccpay/reqCancel`.
    KiccPayCancel {
        approval_date: String,
        approval_no: String,
        amount: i64,
    },
    /// KICC Pay, approval's answer lost: `/smpy/kiccpay/reqRtran` with the approval's data.
    KiccPayNetCancel {
        authorization_id: String,
        transmission: KiccPayTransmission,
    },
}

impl CancelPlan {
    pub(super) fn api(&self) -> &'static str {
        match self {
            CancelPlan::WechatRevise { .. } => "wechat_revise",
            CancelPlan::KiccPayCancel { .. } => "kiccpay_cancel",
            CancelPlan::KiccPayNetCancel { .. } => "kiccpay_net_cancel",
        }
    }

    fn amount(&self, order: &Order) -> i64 {
        match self {
            CancelPlan::WechatRevise { amount, .. } | CancelPlan::KiccPayCancel { amount, .. } => {
                *amount
            }
            CancelPlan::KiccPayNetCancel { .. } => order.amount.minor(),
        }
    }
}

/// How failed cancels are retried (`COMPENSATION_BACKOFF_MS`, `COMPENSATION_MAX_ATTEMPTS`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first retry delay; it doubles per attempt, capped at one hour.
    pub backoff: std::time::Duration,
    /// Failed attempts before the order needs a person.
    pub max_attempts: i32,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): backoff × 2^(attempt−1), at most one
    /// hour, ±20% jitter so instances retrying many jobs do not march in step.
    pub fn delay(&self, attempt: i32) -> TimeDelta {
        use rand::Rng;
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let base = self
            .backoff
            .as_millis()
            .saturating_mul(1u128 << doublings)
            .min(3_600_000) as f64;
        let jittered = base * rand::rng().random_range(0.8..=1.2);
        TimeDelta::milliseconds(jittered as i64)
    }
}

impl Checkout {
    /// Moves the order to `compensating`, records the cancel job, and makes the first attempt.
    /// Returns the order as it stands afterwards.
    ///
    /// The move starts from the order's status *now*, not from `seen` (where the caller found
    /// it): every trigger here is a rule that MUST end in a cancel (spec 02/03/04, DESIGN §4),
    /// and a concurrent path marking the order paid meanwhile (a notification confirmed by the
    /// status check) does not lift it. Only an order already compensating or closed is left to
    /// whoever got there first.
    pub(crate) async fn compensate(
        &self,
        order: &Order,
        seen: OrderStatus,
        plan: CancelPlan,
        reason: String,
        gateway_call_id: Option<i64>,
    ) -> Result<Order, DbError> {
        self.compensate_by(
            OrderEvent::CompensationStarted,
            order,
            seen,
            plan,
            reason,
            gateway_call_id,
        )
        .await
    }

    /// [`Self::compensate`], the order moved by `event` (a late payment's refund starts from
    /// `expired`, `failed` or `cancelled`, which `CompensationStarted` does not leave).
    pub(crate) async fn compensate_by(
        &self,
        event: OrderEvent,
        order: &Order,
        seen: OrderStatus,
        plan: CancelPlan,
        reason: String,
        gateway_call_id: Option<i64>,
    ) -> Result<Order, DbError> {
        let (id, currency) = (order.id, order.amount.currency().code());
        let amount = plan.amount(order).max(1);
        let api = plan.api();
        let cause = reason.clone();
        let started = self
            .db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    start_compensation(
                        conn,
                        id,
                        None,
                        event,
                        api,
                        amount,
                        currency,
                        &cause,
                        gateway_call_id,
                    )
                })
            })
            .await;
        let job = match started {
            Ok(Some(job)) => job,
            Ok(None) => {
                log::info!(
                    "order {} (seen {seen}): compensation already under way or order closed ({reason})",
                    order.shop_order_no
                );
                return self.reload(order.id).await;
            }
            Err(e) => {
                // The database cannot take the job: the money must go back anyway. Cancel
                // in-process now; the record follows when the database answers again.
                log::error!(
                    "order {}: could not record the compensation ({reason}): {e}",
                    order.shop_order_no
                );
                self.cancel_in_process(order, &plan, &reason).await;
                return Err(e);
            }
        };
        log::warn!("order {}: compensating — {reason}", order.shop_order_no);
        let order = self.reload(order.id).await?;
        self.attempt_compensation(&order, job, &plan).await
    }

    /// One attempt of a cancel job; on success the order ends `cancelled`.
    pub(crate) async fn attempt_compensation(
        &self,
        order: &Order,
        job: i64,
        plan: &CancelPlan,
    ) -> Result<Order, DbError> {
        let stored = self
            .db
            .run(move |conn| compensations::find(conn, job))
            .await?
            .ok_or(DbError::NotFound)?;
        let first_date = stored.cancel_req_date.clone();
        if stored.attempts > 0
            && let CancelPlan::WechatRevise { pg_cno, .. } = plan
            && self.cancel_already_done(order, pg_cno).await?
        {
            // Spec 06: after a cancel whose answer was lost or refused, "do not retry blindly:
            // check status first". The earlier attempt went through: nothing to send.
            let (id, full) = (order.id, order.amount.minor());
            return self
                .db
                .run(move |conn| {
                    write_transaction(conn, |conn| {
                        if compensations::mark_confirmed(conn, job, None)? {
                            close_compensated_order(
                                conn,
                                id,
                                full,
                                "status check before a retry: an earlier cancel is done (spec 06)",
                            )?;
                        }
                        orders::find_by_id(conn, id)?.ok_or(DbError::NotFound)
                    })
                })
                .await;
        }
        let (key, date, result) = match plan {
            CancelPlan::WechatRevise { pg_cno, .. } => {
                let call = self
                    .kicc
                    .wechat_revise(
                        order,
                        pg_cno,
                        CancelAmount::Full,
                        &self.cancel_notify_url(),
                        first_date.as_deref(),
                    )
                    .await
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let confirmed = match &call.outcome {
                    Outcome::Accepted(accepted) => {
                        // Accepted means requested (spec 06): confirm with the status check.
                        let cancelled = self.cancel_already_done(order, pg_cno).await?;
                        Ok((accepted.cancel_pg_cno.clone(), cancelled))
                    }
                    other => Err(describe(other)),
                };
                (
                    call.shop_transaction_id,
                    first_date.unwrap_or(call.request_date),
                    confirmed,
                )
            }
            CancelPlan::KiccPayCancel {
                approval_date,
                approval_no,
                amount,
            } => {
                let call = self
                    .kicc
                    .kiccpay_cancel(order, approval_date, approval_no, *amount)
                    .await
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let result = match &call.outcome {
                    // KICC Pay's reply is the result: no webhook follows.
                    Outcome::Accepted(c) => Ok((Some(c.merc_trx_no.clone()), true)),
                    other => Err(describe(other)),
                };
                (
                    call.shop_transaction_id,
                    first_date.unwrap_or(call.request_date),
                    result,
                )
            }
            CancelPlan::KiccPayNetCancel {
                authorization_id,
                transmission,
            } => {
                let call = self
                    .kicc
                    .kiccpay_net_cancel(order, authorization_id, transmission)
                    .await
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let result = match &call.outcome {
                    Outcome::Accepted(()) => Ok((None, true)),
                    other => Err(describe(other)),
                };
                (
                    call.shop_transaction_id,
                    first_date.unwrap_or(call.request_date),
                    result,
                )
            }
        };
        let (id, shop_order_no) = (order.id, order.shop_order_no.clone());
        let full = order.amount.minor();
        let attempt = stored.attempts + 1;
        let policy = self.retry;
        self.db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    match &result {
                        Ok((cancel_pg_cno, confirmed)) => {
                            let requested = AttemptResult::Requested { cancel_pg_cno: cancel_pg_cno.as_deref() };
                            compensations::record_attempt(conn, job, &key, &date, &requested)?;
                            let note = format!(
                                "compensation attempt {attempt}: KICC accepted the cancel{}",
                                cancel_pg_cno.as_deref().map(|c| format!(" (cancelPgCno {c})")).unwrap_or_default()
                            );
                            orders::add_note(conn, id, "compensation_attempt", &note)?;
                            if *confirmed {
                                if compensations::mark_confirmed(conn, job, cancel_pg_cno.as_deref())? {
                                    close_compensated_order(conn, id, full, "KICC confirmed the compensating cancel")?;
                                }
                            } else {
                                // Confirmation outstanding (the webhook, or the reconciler's check).
                                compensations::check_again_at(conn, job, now() + policy.delay(attempt))?;
                            }
                        }
                        Err(error) if attempt >= policy.max_attempts => {
                            log::error!("order {shop_order_no}: cancel attempt {attempt} failed ({error}); giving up");
                            let failed = AttemptResult::Failed { error, retry_at: now() };
                            compensations::record_attempt(conn, job, &key, &date, &failed)?;
                            compensations::give_up(conn, job, error)?;
                            let cause = format!(
                                "compensation attempt {attempt} of {} failed ({error}): a person must look",
                                policy.max_attempts
                            );
                            orders::apply_event(conn, id, OrderEvent::CompensationStuck, &cause, &OrderPatch::default())?;
                        }
                        Err(error) => {
                            let retry_at = now() + policy.delay(attempt);
                            log::warn!("order {shop_order_no}: cancel attempt {attempt} failed ({error}); retry at {retry_at}");
                            compensations::record_attempt(conn, job, &key, &date, &AttemptResult::Failed { error, retry_at })?;
                            let note = format!(
                                "compensation attempt {attempt} of {} failed ({error}); next attempt at {} UTC",
                                policy.max_attempts,
                                retry_at.format("%H:%M:%S")
                            );
                            orders::add_note(conn, id, "compensation_attempt", &note)?;
                        }
                    }
                    orders::find_by_id(conn, id)?.ok_or(DbError::NotFound)
                })
            })
            .await
    }

    /// Whether KICC's payment status check says the trade is already fully cancelled.
    async fn cancel_already_done(&self, order: &Order, pg_cno: &str) -> Result<bool, DbError> {
        let check = self
            .kicc
            .wechat_find(Some(order.id), pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        Ok(check
            .outcome
            .accepted()
            .is_some_and(|s| s.status == TradeStatus::Cancelled))
    }

    async fn reload(&self, id: i64) -> Result<Order, DbError> {
        self.db
            .run(move |conn| orders::find_by_id(conn, id)?.ok_or(DbError::NotFound))
            .await
    }
}

/// Moves the order to `compensating` by `event` (`CompensationStarted`, or `LateRefundStarted`
/// for a late payment; from `from`, or from whatever status it is in) and writes the job row; call inside a write transaction. `None` when the order could not move (another
/// writer took it elsewhere first, or it is past holding money): no job is written then.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_compensation(
    conn: &mut crate::db::AnyConnection,
    order_id: i64,
    from: Option<OrderStatus>,
    event: OrderEvent,
    api: &'static str,
    amount: i64,
    currency: &str,
    reason: &str,
    gateway_call_id: Option<i64>,
) -> Result<Option<i64>, DbError> {
    let outcome = match from {
        Some(expected) => {
            orders::transition(conn, &Transition::new(order_id, expected, event, reason))?
        }
        None => orders::apply_event(conn, order_id, event, reason, &OrderPatch::default())?,
    };
    if !outcome.is_applied() {
        return Ok(None);
    }
    let job = compensations::insert(
        conn,
        &NewCompensation {
            order_id,
            origin: "saga",
            reason,
            api,
            revise_type_code: (api == "wechat_revise").then_some("40"),
            amount: amount.max(1),
            currency,
            gateway_call_id,
        },
    )?;
    Ok(Some(job))
}

/// `compensating` (or `needs_attention`) → `cancelled`, the whole amount counted as cancelled.
pub(super) fn close_compensated_order(
    conn: &mut crate::db::AnyConnection,
    id: i64,
    full: i64,
    cause: &str,
) -> Result<(), DbError> {
    let order = orders::find_by_id(conn, id)?.ok_or(DbError::NotFound)?;
    let t = Transition::new(id, order.status, OrderEvent::CompensationConfirmed, cause)
        .with_patch(OrderPatch::default())
        .with_cancelled_amount(order.cancelled.minor(), full);
    match orders::transition(conn, &t)? {
        TransitionOutcome::Applied { .. } => Ok(()),
        other => {
            log::warn!("order {id}: compensation confirmed but the order did not close: {other:?}");
            Ok(())
        }
    }
}

fn describe<T>(outcome: &Outcome<T>) -> String {
    match outcome {
        Outcome::Declined { code, message, .. } => format!("declined ({code}: {message})"),
        Outcome::Transport(m) | Outcome::Malformed(m) => format!("{}: {m}", outcome.label()),
        other => other.label().to_owned(),
    }
}

/// A compensating cancel made while the database was unreachable: sent at once (the money must
/// go back), recorded once the database answers again by [`Checkout::record_in_process_cancels`].
#[derive(Debug, Clone)]
pub struct InProcessCancel {
    order_id: i64,
    reason: String,
    api: &'static str,
    amount: i64,
    currency: &'static str,
    calls: Vec<crate::db::gateway_calls::DeferredCall>,
    /// The cancel's own key and date (the first deferred call).
    key: String,
    date: String,
    cancel_pg_cno: Option<String>,
    accepted: bool,
    confirmed: bool,
    error: Option<String>,
}

impl Checkout {
    /// The database is unreachable: cancel directly, keep the record in memory (DESIGN §4).
    pub(super) async fn cancel_in_process(&self, order: &Order, plan: &CancelPlan, reason: &str) {
        let kicc = self.kicc.deferred();
        let mut calls = Vec::new();
        let (key, date, accepted, confirmed, cancel_pg_cno, error) = match plan {
            CancelPlan::WechatRevise { pg_cno, .. } => {
                let Ok(call) = kicc
                    .wechat_revise(
                        order,
                        pg_cno,
                        CancelAmount::Full,
                        &self.cancel_notify_url(),
                        None,
                    )
                    .await
                else {
                    log::error!(
                        "order {}: the in-process cancel could not be built",
                        order.shop_order_no
                    );
                    return;
                };
                let (key, date) = (call.shop_transaction_id.clone(), call.request_date.clone());
                let (accepted, cancel_pg_cno, error) = match &call.outcome {
                    Outcome::Accepted(a) => (true, a.cancel_pg_cno.clone(), None),
                    other => (false, None, Some(describe(other))),
                };
                calls.extend(call.deferred);
                let mut confirmed = false;
                if accepted && let Ok(check) = kicc.wechat_find(Some(order.id), pg_cno).await {
                    confirmed = check
                        .outcome
                        .accepted()
                        .is_some_and(|s| s.status == TradeStatus::Cancelled);
                    calls.extend(check.deferred);
                }
                (key, date, accepted, confirmed, cancel_pg_cno, error)
            }
            CancelPlan::KiccPayCancel {
                approval_date,
                approval_no,
                amount,
            } => {
                let Ok(call) = kicc
                    .kiccpay_cancel(order, approval_date, approval_no, *amount)
                    .await
                else {
                    return;
                };
                let accepted = call.outcome.accepted().is_some();
                let error = (!accepted).then(|| describe(&call.outcome));
                let out = (
                    call.shop_transaction_id.clone(),
                    call.request_date.clone(),
                    accepted,
                    accepted,
                    None,
                    error,
                );
                calls.extend(call.deferred);
                out
            }
            CancelPlan::KiccPayNetCancel {
                authorization_id,
                transmission,
            } => {
                let Ok(call) = kicc
                    .kiccpay_net_cancel(order, authorization_id, transmission)
                    .await
                else {
                    return;
                };
                let accepted = call.outcome.accepted().is_some();
                let error = (!accepted).then(|| describe(&call.outcome));
                let out = (
                    call.shop_transaction_id.clone(),
                    call.request_date.clone(),
                    accepted,
                    accepted,
                    None,
                    error,
                );
                calls.extend(call.deferred);
                out
            }
        };
        log::error!(
            "order {}: cancelled in-process while the database is unreachable ({}); to be recorded when it returns",
            order.shop_order_no,
            if confirmed {
                "confirmed"
            } else if accepted {
                "requested"
            } else {
                "not accepted"
            }
        );
        self.in_process
            .lock()
            .expect("in-process list")
            .push(InProcessCancel {
                order_id: order.id,
                reason: format!(
                    "{reason} — cancelled in-process while the database was unreachable"
                ),
                api: plan.api(),
                amount: plan.amount(order).max(1),
                currency: order.amount.currency().code(),
                calls,
                key,
                date,
                cancel_pg_cno,
                accepted,
                confirmed,
                error,
            });
    }

    /// Writes the in-process cancels the database missed: their calls, the order's transition
    /// to `compensating` (and `cancelled` when confirmed) and the job row. Those that still
    /// cannot be written stay for the next try. Returns how many were written.
    pub async fn record_in_process_cancels(&self) -> usize {
        let pending: Vec<InProcessCancel> =
            std::mem::take(&mut *self.in_process.lock().expect("in-process list"));
        let mut written = 0;
        for cancel in pending {
            let item = cancel.clone();
            let result = self
                .db
                .run(move |conn| {
                    write_transaction(conn, |conn| {
                        for call in &item.calls {
                            crate::db::gateway_calls::insert_deferred(conn, call)?;
                        }
                        // The job is recorded whatever the order did meanwhile (the money went
                        // back); the order moves only if it still can.
                        let job = match start_compensation(
                            conn,
                            item.order_id,
                            None,
                            OrderEvent::CompensationStarted,
                            item.api,
                            item.amount,
                            item.currency,
                            &item.reason,
                            None,
                        )? {
                            Some(job) => job,
                            None => {
                                let status = orders::find_by_id(conn, item.order_id)?
                                    .ok_or(DbError::NotFound)?
                                    .status;
                                orders::add_note(
                                    conn,
                                    item.order_id,
                                    "compensated_in_process",
                                    &format!("{} (the order was already {status})", item.reason),
                                )?;
                                compensations::insert(
                                    conn,
                                    &NewCompensation {
                                        order_id: item.order_id,
                                        origin: "saga",
                                        reason: &item.reason,
                                        api: item.api,
                                        revise_type_code: (item.api == "wechat_revise")
                                            .then_some("40"),
                                        amount: item.amount,
                                        currency: item.currency,
                                        gateway_call_id: None,
                                    },
                                )?
                            }
                        };
                        let attempt = match (&item.error, item.accepted) {
                            (_, true) => AttemptResult::Requested {
                                cancel_pg_cno: item.cancel_pg_cno.as_deref(),
                            },
                            (error, false) => AttemptResult::Failed {
                                error: error.as_deref().unwrap_or("not accepted"),
                                retry_at: now(),
                            },
                        };
                        compensations::record_attempt(conn, job, &item.key, &item.date, &attempt)?;
                        if item.confirmed
                            && compensations::mark_confirmed(
                                conn,
                                job,
                                item.cancel_pg_cno.as_deref(),
                            )?
                        {
                            let full = orders::find_by_id(conn, item.order_id)?
                                .ok_or(DbError::NotFound)?
                                .amount
                                .minor();
                            close_compensated_order(
                                conn,
                                item.order_id,
                                full,
                                "KICC confirmed the in-process cancel",
                            )?;
                        }
                        Ok::<_, DbError>(())
                    })
                })
                .await;
            match result {
                Ok(()) => written += 1,
                Err(e) => {
                    log::warn!(
                        "order {}: in-process cancel still not recorded: {e}",
                        cancel.order_id
                    );
                    self.in_process
                        .lock()
                        .expect("in-process list")
                        .push(cancel);
                }
            }
        }
        written
    }

    /// How many in-process cancels wait to be recorded (for `/metrics` and tests).
    pub fn unrecorded_cancels(&self) -> usize {
        self.in_process.lock().expect("in-process list").len()
    }
}
