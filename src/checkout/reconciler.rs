//! The reconciler: finishes what a request could not (DESIGN §4; spec 02/03: timeouts and DB
//! failures end in a cancel; spec 04/05: "if you do not receive a notification … use the status
//! check"). Each pass claims due work under a lease (so instances sharing one database never work
//! the same item twice) and handles it:
//!
//! 1. compensations due: retried with backoff until KICC confirms the cancel (after the configured
//!    number of failures the order is left `needs_attention`); requested cancels are confirmed by
//!    the payment status check;
//! 2. approvals without an answer (a crash after sending, or an unknown ending): `retrieveTransaction`
//!    with the persisted key and date → settled paid (same amount) or cancelled; KICC Pay:
//!    net-cancel with the same data;
//! 3. orders past their expiry: the status check → paid (same amount), cancelled (a different
//!    one), or expired;
//! 4. notified approvals not yet confirmed: the status check → paid;
//! 5. WeChat orders that expired or failed, looked at again on a stretching schedule (2 min,
//!    15 min, 1 h, 6 h and 24 h after they closed):
//!    a payment made after they closed is kept or refunded (`LATE_PAYMENTS`), even when its
//!    notification never arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::Value;

use super::Checkout;
use super::approval::CheckedApproval;
use super::compensate::CancelPlan;
use crate::db::claims::{self, Work};
use crate::db::compensations::{self, Compensation};
use crate::db::gateway_calls::{self, GatewayCall};
use crate::db::orders::{self, OrderPatch};
use crate::db::{DbError, now};
use crate::domain::{Order, OrderEvent, OrderStatus, PayMethod};
use crate::kicc::{KiccPayTransmission, Outcome, TradeStatus};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub claimed: usize,
    pub compensation_attempts: usize,
    pub approvals_resolved: usize,
    pub orders_settled: usize,
}

pub struct Reconciler {
    checkout: Arc<Checkout>,
    /// This instance's name on its leases.
    owner: String,
    /// How long a claim lasts (longer than one item's work: a dead instance's claims expire).
    lease: TimeDelta,
    /// An approval call without an answer this long after it was sent is unanswered, and a
    /// notified approval not confirmed this long after its notification lost its follow-up:
    /// the client's timeout and a margin.
    unanswered_after: TimeDelta,
    batch: i64,
    stopping: AtomicBool,
    /// Wakes the timer loop at once when stopping (an interval can be long).
    wake: tokio::sync::Notify,
    passes: AtomicU64,
    claimed: AtomicU64,
}

impl Reconciler {
    pub fn new(checkout: Arc<Checkout>, gateway_timeout: Duration) -> Self {
        let timeout = TimeDelta::from_std(gateway_timeout).unwrap_or(TimeDelta::seconds(30));
        Self {
            checkout,
            owner: format!(
                "{}-{}",
                hostname(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            lease: TimeDelta::seconds(120).max(timeout * 3),
            unanswered_after: timeout + TimeDelta::seconds(5),
            batch: 50,
            stopping: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            passes: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// (passes run, items claimed) since start, for `/metrics`.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.passes.load(Ordering::Relaxed),
            self.claimed.load(Ordering::Relaxed),
        )
    }

    /// Stop taking new work (graceful shutdown); the item in hand is finished.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A permit is kept if the loop is not waiting yet.
        self.wake.notify_one();
    }

    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    async fn claim(&self, work: Work) -> Result<Vec<i64>, DbError> {
        let (owner, lease, unanswered_after, batch) = (
            self.owner.clone(),
            self.lease,
            self.unanswered_after,
            self.batch,
        );
        self.checkout
            .db
            .run(move |conn| {
                let at = now();
                // An approval call, or a notified approval's follow-up (its status check), is
                // given the client's timeout and a margin before the reconciler steps in.
                let due = if matches!(work, Work::UnansweredApprovals | Work::NotifiedApprovals) {
                    at - unanswered_after
                } else {
                    at
                };
                claims::claim(conn, work, &owner, at, at + lease, due, batch)
            })
            .await
    }

    /// One pass over all due work.
    pub async fn pass(&self) -> Result<PassReport, DbError> {
        let mut report = PassReport::default();
        for work in [
            Work::UnansweredApprovals,
            Work::DueCompensations,
            Work::ExpiredOrders,
            Work::NotifiedApprovals,
            Work::LateChecks,
        ] {
            if self.stopped() {
                break;
            }
            let ids = self.claim(work).await?;
            report.claimed += ids.len();
            for id in ids {
                if self.stopped() {
                    break;
                }
                let handled = match work {
                    Work::UnansweredApprovals => self
                        .resolve_approval(id)
                        .await
                        .map(|done| report.approvals_resolved += usize::from(done)),
                    Work::DueCompensations => self
                        .retry_compensation(id)
                        .await
                        .map(|_| report.compensation_attempts += 1),
                    Work::ExpiredOrders => self
                        .settle_expired(id)
                        .await
                        .map(|done| report.orders_settled += usize::from(done)),
                    Work::NotifiedApprovals => {
                        self.checkout.confirm_notified_payment(id).await.map(|o| {
                            report.orders_settled += usize::from(o.status == OrderStatus::Paid);
                        })
                    }
                    Work::LateChecks => self
                        .late_check(id)
                        .await
                        .map(|done| report.orders_settled += usize::from(done)),
                };
                if let Err(e) = handled {
                    log::warn!("reconciler: {work:?} {id}: {e}");
                }
                let owner = self.owner.clone();
                if let Err(e) = self
                    .checkout
                    .db
                    .run(move |conn| claims::release(conn, work, id, &owner))
                    .await
                {
                    log::warn!("reconciler: {work:?} {id}: lease not released (it expires): {e}");
                }
            }
        }
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.claimed
            .fetch_add(report.claimed as u64, Ordering::Relaxed);
        if report.claimed > 0 {
            log::info!("reconciler {}: {report:?}", self.owner);
        }
        Ok(report)
    }

    async fn order(&self, id: i64) -> Result<Order, DbError> {
        self.checkout
            .db
            .run(move |conn| orders::find_by_id(conn, id)?.ok_or(DbError::NotFound))
            .await
    }

    async fn call(&self, id: i64) -> Result<GatewayCall, DbError> {
        self.checkout
            .db
            .run(move |conn| gateway_calls::find(conn, id)?.ok_or(DbError::NotFound))
            .await
    }

    async fn note(&self, order_id: i64, event: &'static str, cause: String) -> Result<(), DbError> {
        self.checkout
            .db
            .run(move |conn| orders::add_note(conn, order_id, event, &cause))
            .await
    }

    /// A compensation due (work 1): a requested cancel is confirmed by the status check (or
    /// reopened); a pending one is attempted again.
    async fn retry_compensation(&self, job_id: i64) -> Result<(), DbError> {
        let job = self
            .checkout
            .db
            .run(move |conn| compensations::find(conn, job_id)?.ok_or(DbError::NotFound))
            .await?;
        let order = self.order(job.order_id).await?;
        if job.status == compensations::status::REQUESTED {
            return self.confirm_requested_cancel(&job, &order).await;
        }
        let plan = self.plan_for(&job, &order).await?;
        self.checkout
            .attempt_compensation(&order, job.id, &plan)
            .await
            .map(|_| ())
    }

    /// A WeChat cancel KICC accepted but nobody confirmed (no webhook): ask the payment status.
    async fn confirm_requested_cancel(
        &self,
        job: &Compensation,
        order: &Order,
    ) -> Result<(), DbError> {
        let Some(pg_cno) = order.pg_cno.clone() else {
            return Ok(());
        };
        let check = self
            .checkout
            .kicc
            .wechat_find(Some(order.id), &pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let (id, order_id, full) = (job.id, order.id, order.amount.minor());
        let policy = self.checkout.retry;
        let attempts = job.attempts;
        match check.outcome {
            Outcome::Accepted(status) if status.status == TradeStatus::Cancelled => {
                self.checkout
                    .db
                    .run(move |conn| {
                        crate::db::write_transaction(conn, |conn| {
                            if compensations::mark_confirmed(conn, id, None)? {
                                super::compensate::close_compensated_order(
                                    conn,
                                    order_id,
                                    full,
                                    "status check: the cancel is done",
                                )?;
                            }
                            Ok::<_, DbError>(())
                        })
                    })
                    .await
            }
            Outcome::Accepted(_) => {
                // Accepted but not done: attempt it again.
                self.checkout
                    .db
                    .run(move |conn| {
                        compensations::reopen(conn, id, now() + policy.delay(attempts))
                    })
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Rebuilds the cancel of a job from what was recorded.
    async fn plan_for(&self, job: &Compensation, order: &Order) -> Result<CancelPlan, DbError> {
        let call = match job.gateway_call_id {
            Some(id) => Some(self.call(id).await?),
            None => None,
        };
        let json = |body: Option<&str>| {
            body.and_then(|b| serde_json::from_str::<Value>(b).ok())
                .unwrap_or(Value::Null)
        };
        Ok(match job.api.as_str() {
            "kiccpay_cancel" => {
                let reply = json(call.as_ref().and_then(|c| c.response_body.as_deref()));
                CancelPlan::KiccPayCancel {
                    approval_date: reply["aprvDt"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| {
                            order
                                .approval_date
                                .as_ref()
                                .map(|d| d.chars().take(8).collect())
                        })
                        .unwrap_or_default(),
                    approval_no: reply["aprvNo"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| order.approval_no.clone())
                        .unwrap_or_default(),
                    amount: job.amount,
                }
            }
            "kiccpay_net_cancel" => {
                self.net_cancel_plan(order, &json(call.as_ref().map(|c| c.request_body.as_str())))
            }
            _ => CancelPlan::WechatRevise {
                pg_cno: call
                    .as_ref()
                    .and_then(|c| c.pg_cno.clone())
                    .or_else(|| order.pg_cno.clone())
                    .unwrap_or_default(),
                amount: job.amount,
            },
        })
    }

    /// An approval call that never got an answer, or an unknown one (work 2).
    /// Spec 03's net-cancel of a KICC Pay approval: the order's authorizationId (opened from
    /// its sealed form) and the approval request's own `tranDt`/`tranTm`.
    fn net_cancel_plan(&self, order: &Order, approval_request: &Value) -> CancelPlan {
        CancelPlan::KiccPayNetCancel {
            authorization_id: order
                .authorization_id
                .as_deref()
                .and_then(|stored| self.checkout.kicc.unseal_at_rest(stored))
                .unwrap_or_default(),
            transmission: KiccPayTransmission {
                tran_dt: approval_request["tranDt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                tran_tm: approval_request["tranTm"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            },
        }
    }

    async fn resolve_approval(&self, call_id: i64) -> Result<bool, DbError> {
        let call = self.call(call_id).await?;
        let Some(order_id) = call.order_id else {
            return self.resolved(call_id).await;
        };
        let order = self.order(order_id).await?;
        if !matches!(
            order.status,
            OrderStatus::Authorized | OrderStatus::Approving
        ) {
            // Settled meanwhile (a webhook, the return): nothing left open.
            return self.resolved(call_id).await;
        }
        let reason_prefix = format!(
            "reconciler: the approval sent at {} UTC got no usable answer",
            call.requested_at.format("%H:%M:%S")
        );
        if order.pay_method == PayMethod::Kiccpay {
            // Spec 03: no answer → net-cancel with the same data.
            let request: Value = serde_json::from_str(&call.request_body).unwrap_or(Value::Null);
            let plan = self.net_cancel_plan(&order, &request);
            let reason = format!("{reason_prefix}: net-cancel with the same data (spec 03)");
            self.checkout
                .compensate(&order, order.status, plan, reason, Some(call_id))
                .await?;
            return self.resolved(call_id).await;
        }
        // Spec 02/06: ask with the approval's own key and date.
        let check = self
            .checkout
            .kicc
            .retrieve_transaction(
                Some(order.id),
                &call.shop_transaction_id,
                &call.request_date,
            )
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        match check.outcome {
            Outcome::Accepted(found)
                if found.pg_cno.is_some() && found.status == Some(TradeStatus::Approved) =>
            {
                let checked = CheckedApproval {
                    pg_cno: found.pg_cno.unwrap_or_default(),
                    amount: found.amount.unwrap_or_default(),
                    currency: None,
                    approval_date: None,
                    transaction_date: found.transaction_date,
                    call_id: check.call_id,
                    completion: None,
                };
                self.checkout
                    .settle_checked(&order, checked, &reason_prefix)
                    .await?;
            }
            Outcome::Accepted(_) | Outcome::Declined { .. } => {
                let cause = format!("{reason_prefix}; KICC has no approval for it");
                self.checkout
                    .transition(
                        &order,
                        order.status,
                        OrderEvent::PaymentFailed,
                        cause,
                        OrderPatch::default(),
                    )
                    .await?;
            }
            // Still unknown: the lease runs out and the next pass asks again.
            _ => return Ok(false),
        }
        self.resolved(call_id).await
    }

    async fn resolved(&self, call_id: i64) -> Result<bool, DbError> {
        self.checkout
            .db
            .run(move |conn| gateway_calls::mark_resolved(conn, call_id))
            .await?;
        Ok(true)
    }

    /// An order past its expiry (work 3): ask KICC before closing it.
    async fn settle_expired(&self, order_id: i64) -> Result<bool, DbError> {
        let order = self.order(order_id).await?;
        let expire = |cause: String| {
            let order = order.clone();
            async move {
                let event = if order.status == OrderStatus::Created {
                    OrderEvent::RegistrationFailed
                } else {
                    OrderEvent::PaymentExpired
                };
                self.checkout
                    .transition(&order, order.status, event, cause, OrderPatch::default())
                    .await
                    .map(|_| true)
            }
        };
        let (OrderStatus::Pending | OrderStatus::Authorized, PayMethod::Wechat, Some(pg_cno)) =
            (order.status, order.pay_method, order.pg_cno.clone())
        else {
            return match order.status {
                OrderStatus::Created | OrderStatus::Pending | OrderStatus::Authorized => {
                    expire("reconciler: past its expiry without a payment".into()).await
                }
                _ => Ok(false),
            };
        };
        let call = self
            .checkout
            .kicc
            .wechat_find(Some(order.id), &pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        match call.outcome {
            Outcome::Accepted(status) if status.status == TradeStatus::Approved => {
                let checked = CheckedApproval::from_status(pg_cno, status, call.call_id);
                self.checkout
                    .settle_checked(&order, checked, "reconciler: past its expiry")
                    .await?;
                Ok(true)
            }
            Outcome::Accepted(status) => {
                expire(format!(
                    "reconciler: past its expiry, KICC status {:?}: expired",
                    status.status
                ))
                .await
            }
            Outcome::Declined { code, message, .. } => expire(format!(
                "reconciler: past its expiry, KICC knows no payment ({code}: {message}): expired"
            ))
            .await,
            other => {
                self.note(
                    order.id,
                    "reconcile_deferred",
                    format!(
                        "reconciler: status check ended {}; trying again later",
                        other.label()
                    ),
                )
                .await?;
                Ok(false)
            }
        }
    }

    /// A WeChat order that expired or failed, due for another look (work 5): KICC's status
    /// check finds a payment made after the order closed (its notification lost or refused),
    /// which is then kept or refunded like any late payment; otherwise the next look is
    /// scheduled, further out each time, until the schedule ends.
    async fn late_check(&self, order_id: i64) -> Result<bool, DbError> {
        let order = self.order(order_id).await?;
        let (true, PayMethod::Wechat, Some(pg_cno)) = (
            matches!(order.status, OrderStatus::Expired | OrderStatus::Failed),
            order.pay_method,
            order.pg_cno.clone(),
        ) else {
            self.schedule_late_check(order_id, None).await?;
            return Ok(false);
        };
        let call = self
            .checkout
            .kicc
            .wechat_find(Some(order.id), &pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        if let Outcome::Accepted(status) = call.outcome
            && status.status == TradeStatus::Approved
        {
            let checked = CheckedApproval::from_status(pg_cno, status, call.call_id);
            self.checkout
                .settle_checked(&order, checked, "reconciler: late check")
                .await?;
            self.schedule_late_check(order_id, None).await?;
            return Ok(true);
        }
        let next = orders::next_late_check(order.updated_at, now());
        self.schedule_late_check(order_id, next).await?;
        Ok(false)
    }

    async fn schedule_late_check(
        &self,
        order_id: i64,
        at: Option<chrono::NaiveDateTime>,
    ) -> Result<(), DbError> {
        self.checkout
            .db
            .run(move |conn| orders::schedule_late_check(conn, order_id, at))
            .await
    }

    /// The worker: a pass every `interval` until [`Reconciler::stop`].
    pub fn spawn(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let reconciler = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = reconciler.wake.notified() => {}
                }
                if reconciler.stopped() {
                    break;
                }
                if let Err(e) = reconciler.pass().await {
                    log::warn!("reconciler pass failed: {e}");
                }
            }
        })
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kicc".to_owned())
}
