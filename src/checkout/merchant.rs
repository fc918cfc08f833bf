//! The merchant's own actions from the dashboard: a full or partial cancel (WeChat Pay
//! `wechatpay/revise` 40/32 with msgAuthValue, spec 06; KICC Pay `reqCancel`), and "re-check
//! with KICC". A cancel is a job like a compensation (origin `merchant`), written with the
//! `cancel_requested` transition before anything is sent: a second click finds the order already
//! `cancel_requested` and sends nothing.

use super::Checkout;
use crate::db::compensations::{self, AttemptResult, NewCompensation};
use crate::db::orders::{self, Transition, TransitionOutcome};
use crate::db::{DbError, now, write_transaction};
use crate::domain::{Order, OrderEvent, OrderStatus, PayMethod, ShopOrderNo};
use crate::kicc::{CancelAmount, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("no such order")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl Checkout {
    async fn find(&self, no: &ShopOrderNo) -> Result<Order, MerchantError> {
        let no = no.clone();
        self.db
            .run(move |conn| orders::find_by_shop_order_no(conn, &no))
            .await?
            .ok_or(MerchantError::NotFound)
    }

    /// Cancels `amount` minor units (`None`: all that remains). Returns the order afterwards
    /// (`cancel_requested` until KICC's cancellation webhook settles a WeChat cancel).
    pub async fn merchant_cancel(
        &self,
        no: &ShopOrderNo,
        amount: Option<i64>,
    ) -> Result<Order, MerchantError> {
        let order = self.find(no).await?;
        if !matches!(
            order.status,
            OrderStatus::Paid | OrderStatus::PartiallyCancelled
        ) {
            return Err(MerchantError::Refused(format!(
                "an order that is {} cannot be cancelled",
                order.status
            )));
        }
        let remaining = order.remaining().minor();
        let amount = amount.unwrap_or(remaining);
        if amount <= 0 || amount > remaining {
            return Err(MerchantError::Refused(format!(
                "the amount must be more than 0 and at most what remains ({})",
                order.remaining()
            )));
        }
        // Spec 06: 40 cancels what remains, 32 a part.
        let partial = amount < remaining;
        let (api, code) = match order.pay_method {
            PayMethod::Wechat => ("wechat_revise", if partial { "32" } else { "40" }),
            PayMethod::Kiccpay => ("kiccpay_cancel", if partial { "32" } else { "40" }),
        };
        let (id, expected, currency) = (order.id, order.status, order.amount.currency().code());
        let reason = format!(
            "merchant cancel of {} ({})",
            crate::domain::Money::from_minor(amount, order.amount.currency())
                .unwrap_or(order.amount),
            if partial { "partial" } else { "full" }
        );
        let cause = reason.clone();
        let job = self
            .db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    let t =
                        Transition::new(id, expected, OrderEvent::CancelRequested, cause.clone());
                    if !orders::transition(conn, &t)?.is_applied() {
                        return Ok(None);
                    }
                    let job = compensations::insert(
                        conn,
                        &NewCompensation {
                            order_id: id,
                            origin: "merchant",
                            reason: &cause,
                            api,
                            revise_type_code: Some(code),
                            amount,
                            currency,
                            gateway_call_id: None,
                        },
                    )?;
                    Ok::<_, DbError>(Some(job))
                })
            })
            .await?;
        let Some(job) = job else {
            // A second click (or another admin) got there first: nothing is sent.
            return Err(MerchantError::Refused(
                "a cancel for this order is already under way".into(),
            ));
        };
        let before = order.cancelled.minor();
        let result = match order.pay_method {
            PayMethod::Wechat => {
                let pg_cno = order.pg_cno.clone().unwrap_or_default();
                let how = if partial {
                    CancelAmount::Partial(amount)
                } else {
                    CancelAmount::Full
                };
                let call = self
                    .kicc
                    .wechat_revise(&order, &pg_cno, how, &self.cancel_notify_url(), None)
                    .await
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let done = match &call.outcome {
                    Outcome::Accepted(c) => Ok((c.cancel_pg_cno.clone(), false)),
                    other => Err(other.label().to_owned() + &declined_detail(other)),
                };
                (call.shop_transaction_id, call.request_date, done)
            }
            PayMethod::Kiccpay => {
                let date: String = order
                    .approval_date
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(8)
                    .collect();
                let call = self
                    .kicc
                    .kiccpay_cancel(
                        &order,
                        &date,
                        order.approval_no.as_deref().unwrap_or_default(),
                        amount,
                    )
                    .await
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let done = match &call.outcome {
                    // KICC Pay's reply is final: no cancellation webhook follows.
                    Outcome::Accepted(c) => Ok((Some(c.merc_trx_no.clone()), true)),
                    other => Err(other.label().to_owned() + &declined_detail(other)),
                };
                (call.shop_transaction_id, call.request_date, done)
            }
        };
        let (key, date, done) = result;
        let full = order.amount.minor();
        self.db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    match &done {
                        Ok((cancel_ref, settled)) => {
                            compensations::record_attempt(
                                conn,
                                job,
                                &key,
                                &date,
                                &AttemptResult::Requested {
                                    cancel_pg_cno: cancel_ref.as_deref(),
                                },
                            )?;
                            if *settled
                                && compensations::mark_confirmed(conn, job, cancel_ref.as_deref())?
                            {
                                let after = (before + amount).min(full);
                                let t = Transition::new(
                                    id,
                                    OrderStatus::CancelRequested,
                                    OrderEvent::CancelSettled {
                                        fully: after >= full,
                                    },
                                    "KICC Pay confirmed the cancel",
                                )
                                .with_cancelled_amount(before, after);
                                orders::transition(conn, &t)?;
                            }
                        }
                        Err(error) => {
                            compensations::record_attempt(
                                conn,
                                job,
                                &key,
                                &date,
                                &AttemptResult::Failed {
                                    error,
                                    retry_at: now(),
                                },
                            )?;
                            compensations::give_up(conn, job, error)?;
                            let t = Transition::new(
                                id,
                                OrderStatus::CancelRequested,
                                OrderEvent::CancelRejected {
                                    partially_cancelled_before: before > 0,
                                },
                                format!("KICC refused the cancel: {error}"),
                            );
                            if let TransitionOutcome::NotAllowed(e) = orders::transition(conn, &t)?
                            {
                                log::warn!("order {id}: {e}");
                            }
                        }
                    }
                    orders::find_by_id(conn, id)?.ok_or(DbError::NotFound)
                })
            })
            .await
            .map_err(MerchantError::from)
    }

    /// "Re-check with KICC": the payment status check, recorded in the timeline; an order still
    /// waiting that KICC shows approved is settled (amounts compared), and a late payment is
    /// kept or refunded. Single-flight per order with a cooldown, like every status
    /// check a person can trigger.
    pub async fn merchant_recheck(&self, no: &ShopOrderNo) -> Result<String, MerchantError> {
        let order = self.find(no).await?;
        let Some(pg_cno) = order
            .pg_cno
            .clone()
            .filter(|_| order.pay_method == PayMethod::Wechat)
        else {
            return Err(MerchantError::Refused(
                "only WeChat Pay payments have a status check".into(),
            ));
        };
        if !self.claim_status_check(order.id).await? {
            return Err(MerchantError::Refused(format!(
                "KICC was asked about this order less than {} s ago; try again in a moment",
                self.status_check_cooldown.as_secs()
            )));
        }
        let call = self
            .kicc
            .wechat_find(Some(order.id), &pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let summary = match &call.outcome {
            Outcome::Accepted(s) => format!(
                "KICC: {:?}, amount {} {}",
                s.status,
                s.amount.map(|a| a.to_string()).unwrap_or_default(),
                s.currency.clone().unwrap_or_default()
            ),
            other => format!(
                "KICC's status check ended {}{}",
                other.label(),
                declined_detail(other)
            ),
        };
        let note = format!("merchant re-check — {summary}");
        let id = order.id;
        self.db
            .run(move |conn| orders::add_note(conn, id, "merchant_recheck", &note))
            .await?;
        if let Outcome::Accepted(status) = call.outcome
            && status.status == crate::kicc::TradeStatus::Approved
            && (matches!(
                order.status,
                OrderStatus::Pending | OrderStatus::Authorized | OrderStatus::Approving
            ) || super::approval::is_late(order.status))
        {
            let found = super::approval::CheckedApproval::from_status(pg_cno, status, call.call_id);
            self.settle_checked(&order, found, "merchant re-check")
                .await?;
        }
        Ok(summary)
    }
}

fn declined_detail<T>(outcome: &Outcome<T>) -> String {
    match outcome {
        Outcome::Declined { code, message, .. } => format!(" ({code}: {message})"),
        _ => String::new(),
    }
}
