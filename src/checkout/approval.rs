//! The returnUrl and the approval saga (spec 02, 03, 06). The returnUrl is the shopper's
//! browser: it is never trusted for amounts or status — only for the order number and the
//! authorizationId, which KICC itself then confirms or refuses.

use super::Checkout;
use super::compensate::CancelPlan;
use super::place::CheckoutError;
use crate::db::orders::{self, OrderPatch};
use crate::db::{DbError, now};
use crate::domain::{LatePayments, Order, OrderEvent, OrderStatus, PayMethod, ShopOrderNo};
use crate::kicc::{Approval, Completion, KiccPayApproval, Outcome, PaymentStatus, TradeStatus};

/// What the payment window sent back (spec 06: `resCd, resMsg, shopOrderNo, authorizationId`).
#[derive(Debug, Clone, Default)]
pub struct ReturnParams {
    pub res_cd: String,
    pub res_msg: String,
    pub shop_order_no: String,
    pub authorization_id: Option<String>,
}

impl ReturnParams {
    /// The returnUrl's fields from its query string and its (form) body; a body field wins
    /// over the query's. Never fails: what is missing is empty, and `handle_return` decides.
    pub fn parse(query: &str, body: &[u8]) -> Self {
        let mut fields: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        fields.extend(url::form_urlencoded::parse(body).into_owned());
        let mut take = |name: &str| fields.remove(name);
        ReturnParams {
            res_cd: take("resCd").unwrap_or_default(),
            res_msg: take("resMsg").unwrap_or_default(),
            shop_order_no: take("shopOrderNo").unwrap_or_default(),
            authorization_id: take("authorizationId"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ReturnOutcome {
    /// No order has that number.
    UnknownOrder,
    /// The order as it stands after the return was handled.
    Order(Box<Order>),
}

impl Checkout {
    /// `GET|POST /checkout/return`.
    pub async fn handle_return(
        &self,
        params: ReturnParams,
    ) -> Result<ReturnOutcome, CheckoutError> {
        let Ok(no) = ShopOrderNo::parse(params.shop_order_no.trim()) else {
            return Ok(ReturnOutcome::UnknownOrder);
        };
        let Some(order) = self
            .db
            .run(move |conn| orders::find_by_shop_order_no(conn, &no))
            .await?
        else {
            return Ok(ReturnOutcome::UnknownOrder);
        };
        let order = if params.res_cd != "0000" {
            // The shopper cancelled or authentication failed (spec 06) — or so says a browser,
            // which anyone can be: the order stays as it is until KICC confirms (the status
            // check) or it expires. A shopper who cancelled can still pay.
            let cause = format!(
                "returnUrl says resCd {} — {}: not confirmed by KICC; the order stays {} until it is paid or expires",
                params.res_cd, params.res_msg, order.status
            );
            self.check_payment(order, "returnUrl with a failure", Some(cause))
                .await?
        } else {
            match params.authorization_id.filter(|a| !a.trim().is_empty()) {
                Some(authorization_id) if order.status == OrderStatus::Pending => {
                    self.approve(order, authorization_id.trim()).await?
                }
                // Not waiting for the shopper any more (a replay, or a shopper paying after
                // the order expired): KICC says whether money was taken.
                _ => {
                    self.check_payment(order, "returnUrl without an authorizationId", None)
                        .await?
                }
            }
        };
        Ok(ReturnOutcome::Order(Box::new(order)))
    }

    /// Approves an order that waits for the shopper. Any other status means the approval is
    /// under way or done (a replayed returnUrl, a webhook that came first): nothing is sent twice.
    async fn approve(&self, order: Order, authorization_id: &str) -> Result<Order, CheckoutError> {
        if order.status != OrderStatus::Pending {
            return Ok(order);
        }
        // Kept only where it is needed again (a KICC Pay net-cancel resends the approval's
        // data, spec 03/06), and then sealed: never in plain text in the database.
        let patch = OrderPatch {
            authorization_id: (order.pay_method == PayMethod::Kiccpay)
                .then(|| self.kicc.seal_at_rest(authorization_id)),
            ..Default::default()
        };
        let order = self
            .transition(
                &order,
                OrderStatus::Pending,
                OrderEvent::ShopperAuthenticated,
                "returnUrl brought an authorizationId".into(),
                patch,
            )
            .await?;
        if order.status != OrderStatus::Authorized {
            return Ok(order);
        }
        let api = match order.pay_method {
            PayMethod::Wechat => "approval v2 (spec 02)",
            PayMethod::Kiccpay => "KICC Pay reqAprv (spec 03)",
        };
        let order = self
            .transition(
                &order,
                OrderStatus::Authorized,
                OrderEvent::ApprovalRequested,
                format!("{api} sent"),
                OrderPatch::default(),
            )
            .await?;
        if order.status != OrderStatus::Approving {
            return Ok(order);
        }
        match order.pay_method {
            PayMethod::Wechat => self.approve_wechat(order, authorization_id).await,
            PayMethod::Kiccpay => self.approve_kiccpay(order, authorization_id).await,
        }
    }

    async fn approve_wechat(
        &self,
        order: Order,
        authorization_id: &str,
    ) -> Result<Order, CheckoutError> {
        let call = self.kicc.approve(&order, authorization_id).await?;
        let approving = OrderStatus::Approving;
        match call.outcome {
            Outcome::Accepted(approval) if !names_order(&approval, &order) => {
                // The reply must be about this order (spec 02: it echoes pgCno and
                // shopOrderNo); one naming another cannot be trusted with the order's money.
                let reason = format!(
                    "approval reply names pgCno {} / shopOrderNo {}, not this order's: not trustworthy, cancel",
                    approval.pg_cno,
                    approval.shop_order_no.as_deref().unwrap_or("-")
                );
                let plan = CancelPlan::WechatRevise {
                    pg_cno: order.pg_cno.clone().unwrap_or_default(),
                    amount: order.amount.minor(),
                };
                Ok(self
                    .compensate(&order, approving, plan, reason, call.call_id)
                    .await?)
            }
            Outcome::Accepted(approval)
                if approval.amount != order.amount.minor()
                    && !crate::faults::amount_check_skipped() =>
            {
                let reason = format!(
                    "approved amount {} differs from the order's {}: cancel (spec 02)",
                    approval.amount,
                    order.amount.minor()
                );
                let plan = CancelPlan::WechatRevise {
                    pg_cno: approval.pg_cno.clone(),
                    amount: approval.amount,
                };
                Ok(self
                    .compensate(&order, approving, plan, reason, call.call_id)
                    .await?)
            }
            Outcome::Accepted(approval) => match self.settle_wechat(&order, &approval).await {
                Ok(order) => Ok(order),
                Err(e) => {
                    let reason =
                        format!("the database write after approval failed ({e}): cancel (spec 02)");
                    let plan = CancelPlan::WechatRevise {
                        pg_cno: approval.pg_cno.clone(),
                        amount: approval.amount,
                    };
                    Ok(self
                        .compensate(&order, approving, plan, reason, call.call_id)
                        .await?)
                }
            },
            Outcome::IntegrityFailure { detail, pg_cno } => {
                let reason = format!("approval reply not trustworthy ({detail}): cancel");
                let pg_cno = pg_cno.or_else(|| order.pg_cno.clone()).unwrap_or_default();
                let plan = CancelPlan::WechatRevise {
                    pg_cno,
                    amount: order.amount.minor(),
                };
                Ok(self
                    .compensate(&order, approving, plan, reason, call.call_id)
                    .await?)
            }
            Outcome::Declined { code, message, .. } => Ok(self
                .transition(
                    &order,
                    approving,
                    OrderEvent::PaymentFailed,
                    format!("approval declined ({code}: {message})"),
                    OrderPatch::default(),
                )
                .await?),
            unknown => {
                // Spec 02: no answer → verify with the status check, cancel if a pgCno exists.
                let label = unknown.label();
                let check = self
                    .kicc
                    .retrieve_transaction(
                        Some(order.id),
                        &call.shop_transaction_id,
                        &call.request_date,
                    )
                    .await?;
                match check.outcome {
                    Outcome::Accepted(found) if found.pg_cno.is_some() => {
                        let pg_cno = found.pg_cno.unwrap_or_default();
                        let reason = format!(
                            "approval ended {label}; the status check found pgCno {pg_cno}: cancel (spec 02)"
                        );
                        let plan = CancelPlan::WechatRevise {
                            pg_cno,
                            amount: found.amount.unwrap_or(order.amount.minor()),
                        };
                        Ok(self
                            .compensate(&order, approving, plan, reason, call.call_id)
                            .await?)
                    }
                    Outcome::Accepted(_) | Outcome::Declined { .. } => Ok(self
                        .transition(
                            &order,
                            approving,
                            OrderEvent::PaymentFailed,
                            format!("approval ended {label}; KICC has no approval for it"),
                            OrderPatch::default(),
                        )
                        .await?),
                    still_unknown => {
                        let id = order.id;
                        let note = format!(
                            "approval ended {label} and the status check ended {}: left approving for the reconciler",
                            still_unknown.label()
                        );
                        self.db
                            .run(move |conn| {
                                orders::add_note(conn, id, "approval_unresolved", &note)
                            })
                            .await?;
                        Ok(order)
                    }
                }
            }
        }
    }

    /// Approved, amount equal, msgAuthValue valid: the order is paid — if this write succeeds.
    async fn settle_wechat(&self, order: &Order, approval: &Approval) -> Result<Order, DbError> {
        let patch = OrderPatch {
            pg_cno: Some(approval.pg_cno.clone()),
            approval_no: approval.approval_no.clone(),
            approval_date: approval
                .approval_date
                .clone()
                .or_else(|| Some(approval.transaction_date.clone())),
            transaction_date: Some(approval.transaction_date.clone()),
            kicc_status_code: approval.status_code.clone(),
            paid_at: Some(now()),
            ..Default::default()
        };
        let cause = format!(
            "approved: pgCno {}, amount {}, msgAuthValue valid",
            approval.pg_cno, approval.amount
        );
        self.transition(
            order,
            OrderStatus::Approving,
            OrderEvent::PaymentConfirmed,
            cause,
            patch,
        )
        .await
    }

    async fn approve_kiccpay(
        &self,
        order: Order,
        authorization_id: &str,
    ) -> Result<Order, CheckoutError> {
        let (call, transmission) = self.kicc.kiccpay_approve(&order, authorization_id).await?;
        let approving = OrderStatus::Approving;
        let cancel_plan = |approval: &KiccPayApproval, amount: i64| CancelPlan::KiccPayCancel {
            approval_date: approval.approval_date.clone().unwrap_or_default(),
            approval_no: approval.approval_no.clone().unwrap_or_default(),
            amount,
        };
        match call.outcome {
            Outcome::Accepted(approval)
                if approval.amount.is_some_and(|a| a != order.amount.minor()) =>
            {
                let approved = approval.amount.unwrap_or_default();
                let reason = format!(
                    "approved amount {approved} differs from the order's {}: cancel (spec 03)",
                    order.amount.minor()
                );
                Ok(self
                    .compensate(
                        &order,
                        approving,
                        cancel_plan(&approval, approved),
                        reason,
                        call.call_id,
                    )
                    .await?)
            }
            Outcome::Accepted(approval) => {
                let patch = OrderPatch {
                    approval_no: approval.approval_no.clone(),
                    approval_date: approval.approval_date.as_ref().map(|d| {
                        format!("{d}{}", approval.approval_time.clone().unwrap_or_default())
                    }),
                    paid_at: Some(now()),
                    ..Default::default()
                };
                let cause = format!(
                    "KICC Pay approved: approval no {}",
                    approval.approval_no.clone().unwrap_or_default()
                );
                match self
                    .transition(
                        &order,
                        approving,
                        OrderEvent::PaymentConfirmed,
                        cause,
                        patch,
                    )
                    .await
                {
                    Ok(order) => Ok(order),
                    Err(e) => {
                        let reason = format!(
                            "the database write after approval failed ({e}): cancel (spec 03)"
                        );
                        let amount = order.amount.minor();
                        Ok(self
                            .compensate(
                                &order,
                                approving,
                                cancel_plan(&approval, amount),
                                reason,
                                call.call_id,
                            )
                            .await?)
                    }
                }
            }
            Outcome::Declined { code, message, .. } => Ok(self
                .transition(
                    &order,
                    approving,
                    OrderEvent::PaymentFailed,
                    format!("KICC Pay declined ({code}: {message})"),
                    OrderPatch::default(),
                )
                .await?),
            unknown => {
                // Spec 03: read timeout, connection error or unparseable reply → net-cancel
                // with the same data.
                let reason = format!(
                    "KICC Pay approval ended {}: net-cancel with the same data (spec 03)",
                    unknown.label()
                );
                let plan = CancelPlan::KiccPayNetCancel {
                    authorization_id: authorization_id.to_owned(),
                    transmission,
                };
                Ok(self
                    .compensate(&order, approving, plan, reason, call.call_id)
                    .await?)
            }
        }
    }

    /// A return KICC must confirm: ask `/api/trades/wechatpay/find` (spec 06: never trust the
    /// returnUrl). Anyone can send a return, so the check is single-flight per order with a
    /// cooldown the database keeps ([`Self::claim_status_check`]). An approval found settles
    /// the order (late or not, [`Self::settle_checked`]); otherwise `note`, if any, is written.
    async fn check_payment(
        &self,
        order: Order,
        context: &str,
        note: Option<String>,
    ) -> Result<Order, CheckoutError> {
        let checkable = matches!(
            order.status,
            OrderStatus::Pending | OrderStatus::Expired | OrderStatus::Failed
        );
        let (true, PayMethod::Wechat, Some(pg_cno)) =
            (checkable, order.pay_method, order.pg_cno.clone())
        else {
            return Ok(self.note_unconfirmed(order, note).await?);
        };
        if !self.claim_status_check(order.id).await? {
            // Checked moments ago: a replayed or flooded return changes nothing, writes nothing.
            return Ok(order);
        }
        let call = self.kicc.wechat_find(Some(order.id), &pg_cno).await?;
        let approved = match call.outcome {
            Outcome::Accepted(status) if status.status == TradeStatus::Approved => status,
            _ => return Ok(self.note_unconfirmed(order, note).await?),
        };
        let found = CheckedApproval::from_status(pg_cno, approved, call.call_id);
        Ok(self.settle_checked(&order, found, context).await?)
    }

    /// Whether an outsider-triggered status check for this order may go to KICC now: one per
    /// [`Checkout::status_check_cooldown`], across instances.
    pub(crate) async fn claim_status_check(&self, order_id: i64) -> Result<bool, DbError> {
        let cooldown = chrono::TimeDelta::from_std(self.status_check_cooldown)
            .unwrap_or(chrono::TimeDelta::seconds(10));
        self.db
            .run(move |conn| orders::claim_status_check(conn, order_id, cooldown))
            .await
    }

    /// Writes `note` (what a browser said that KICC did not confirm) on the order's timeline.
    async fn note_unconfirmed(&self, order: Order, note: Option<String>) -> Result<Order, DbError> {
        if let Some(note) = note {
            let id = order.id;
            self.db
                .run(move |conn| orders::add_note(conn, id, "return_unconfirmed", &note))
                .await?;
        }
        Ok(order)
    }

    /// A status check (not the approval's own reply) found the payment approved: with the order's
    /// amount and currency the order is paid; otherwise what was approved is cancelled.
    /// `context` opens the timeline cause.
    pub(crate) async fn settle_checked(
        &self,
        order: &Order,
        found: CheckedApproval,
        context: &str,
    ) -> Result<Order, DbError> {
        let same_currency = found
            .currency
            .as_deref()
            .is_none_or(|c| c == order.amount.currency().code());
        let matches = found.amount == order.amount.minor() && same_currency;
        if is_late(order.status) {
            return self.settle_late(order, found, context, matches).await;
        }
        if !matches {
            let reason = format!(
                "{context}: the status check found {} {} approved for an order of {}: cancel",
                found.amount,
                found.currency.clone().unwrap_or_default(),
                order.amount
            );
            let plan = CancelPlan::WechatRevise {
                pg_cno: found.pg_cno,
                amount: found.amount,
            };
            if let Some(completion) = found.completion {
                self.kicc.write_completion(completion).await;
            }
            return self
                .compensate(order, order.status, plan, reason, found.call_id)
                .await;
        }
        let cause = format!(
            "{context}: the status check found pgCno {} approved for {}: paid",
            found.pg_cno, found.amount
        );
        let late = found.clone_facts();
        let patch = paid_patch(&found);
        let settled = self
            .transition_after(
                found.completion,
                order,
                order.status,
                OrderEvent::PaymentConfirmed,
                cause,
                patch,
            )
            .await?;
        // The order stopped waiting meanwhile (the reconciler expired it, a decline failed it):
        // what KICC approved must still end paid or refunded, never only noted.
        if matches!(settled.status, OrderStatus::Expired | OrderStatus::Failed) {
            return self.settle_late(&settled, late, context, matches).await;
        }
        Ok(settled)
    }

    /// An approval KICC confirmed for an order that no longer waits for one:
    /// `expired`/`failed` → paid under `LATE_PAYMENTS=accept` (same amount and currency), else
    /// refunded by a compensating cancel; `cancelled` → always refunded.
    async fn settle_late(
        &self,
        order: &Order,
        found: CheckedApproval,
        context: &str,
        matches: bool,
    ) -> Result<Order, DbError> {
        let was = order.status;
        if crate::faults::late_payments_ignored() {
            let (id, note) = (
                order.id,
                format!("{context}: approval found; the order is {was}"),
            );
            self.db
                .run(move |conn| orders::add_note(conn, id, "late_payment_ignored", &note))
                .await?;
            return Ok(order.clone());
        }
        if matches && was != OrderStatus::Cancelled && self.late_payments == LatePayments::Accept {
            let cause = format!(
                "{context}: late payment accepted: the status check found pgCno {} approved for {} after the order was {was}",
                found.pg_cno, found.amount
            );
            let patch = paid_patch(&found);
            return self
                .transition_after(
                    found.completion,
                    order,
                    was,
                    OrderEvent::LatePaymentAccepted,
                    cause,
                    patch,
                )
                .await;
        }
        let why = if was == OrderStatus::Cancelled {
            "the order was already cancelled".to_owned()
        } else if !matches {
            format!(
                "{} {} differs from the order's {}",
                found.amount,
                found.currency.clone().unwrap_or_default(),
                order.amount
            )
        } else {
            format!("LATE_PAYMENTS=refund and the order was {was}")
        };
        let reason = format!(
            "{context}: late payment refunded: the status check found pgCno {} approved after the order was {was} ({why})",
            found.pg_cno
        );
        if let Some(completion) = found.completion {
            self.kicc.write_completion(completion).await;
        }
        let plan = CancelPlan::WechatRevise {
            pg_cno: found.pg_cno,
            amount: found.amount,
        };
        self.compensate_by(
            OrderEvent::LateRefundStarted,
            order,
            was,
            plan,
            reason,
            found.call_id,
        )
        .await
    }
}

/// Whether an approval reply names the order it was asked for: its pgCno (when the order has
/// one) and its shopOrderNo (when the reply carries one).
fn names_order(approval: &Approval, order: &Order) -> bool {
    order
        .pg_cno
        .as_deref()
        .is_none_or(|known| known == approval.pg_cno)
        && approval
            .shop_order_no
            .as_deref()
            .is_none_or(|no| no == order.shop_order_no.as_str())
}

/// Statuses of an order that stopped waiting for a payment without holding one: an approval
/// found for it is a late payment ([`Checkout::settle_late`]).
pub(crate) fn is_late(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Expired | OrderStatus::Failed | OrderStatus::Cancelled
    )
}

/// What a `paid` order records of the approval a status check found.
fn paid_patch(found: &CheckedApproval) -> OrderPatch {
    OrderPatch {
        pg_cno: Some(found.pg_cno.clone()),
        approval_date: found.approval_date.clone(),
        transaction_date: found.transaction_date.clone(),
        kicc_status_code: Some("TS01".into()),
        paid_at: Some(now()),
        ..Default::default()
    }
}

/// What a status check found approved.
pub(crate) struct CheckedApproval {
    pub pg_cno: String,
    pub amount: i64,
    pub currency: Option<String>,
    pub approval_date: Option<String>,
    pub transaction_date: Option<String>,
    /// The status check's own call.
    pub call_id: Option<i64>,
    /// Its ending, when the caller left it to be written here: in the same write transaction
    /// as the `paid` transition it leads to.
    pub completion: Option<Completion>,
}

impl CheckedApproval {
    /// What a payment status check of `pg_cno` (`/api/trades/wechatpay/find`, call `call_id`)
    /// found approved.
    pub(crate) fn from_status(pg_cno: String, status: PaymentStatus, call_id: Option<i64>) -> Self {
        Self {
            pg_cno,
            amount: status.amount.unwrap_or_default(),
            currency: status.currency,
            approval_date: status.approval_date,
            transaction_date: None,
            call_id,
            completion: None,
        }
    }

    /// The facts, without the completion (which is written once).
    fn clone_facts(&self) -> Self {
        Self {
            pg_cno: self.pg_cno.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            approval_date: self.approval_date.clone(),
            transaction_date: self.transaction_date.clone(),
            call_id: self.call_id,
            completion: None,
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests of the returnUrl parser (`ReturnParams::parse`), with the mutators of
    //! `kicc::fuzz`: what the payment window sends back, as a form body and a query string.
    use proptest::prelude::*;

    use super::ReturnParams;
    use crate::kicc::fuzz::edited;

    /// What the sandbox's return form and KICC send (spec 06), and a query-string return.
    const SEEDS: &[&str] = &[
        "resCd=0000&resMsg=%EC%A0%95%EC%83%81&shopOrderNo=261121-1530-K7QX9M2A&authorizationId=AUTH-7f3c9a21&shopValue1=x",
        "resCd=W002&resMsg=Cancelled+by+the+shopper&shopOrderNo=261121-1530-K7QX9M2A",
        "resCd=0000&shopOrderNo=261121-1530-K7QX9M2A&authorizationId=a%2Bb%3D%3D&authorizationId=second",
    ];

    fn encode(value: &str) -> String {
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
    }

    proptest! {
        #[test]
        fn return_parser_never_panics(query in edited(SEEDS), body in edited(SEEDS)) {
            let query = String::from_utf8_lossy(&query);
            let params = ReturnParams::parse(&query, &body);
            // What handle_return does first with it.
            let _ = crate::domain::ShopOrderNo::parse(&params.shop_order_no);
        }

        #[test]
        fn valid_returns_parse_to_what_they_say(
            res_cd in "\\PC{0,8}",
            res_msg in "\\PC{0,60}",
            order in "\\PC{0,40}",
            authorization in prop::option::of("\\PC{0,80}"),
            in_query in any::<bool>(),
            query_noise in "\\PC{0,20}",
        ) {
            let mut form = format!(
                "resCd={}&resMsg={}&shopOrderNo={}",
                encode(&res_cd),
                encode(&res_msg),
                encode(&order)
            );
            if let Some(a) = &authorization {
                form.push_str(&format!("&authorizationId={}", encode(a)));
            }
            // In the query (a GET return), or in the body with a query whose fields it overrides.
            let (query, body) = if in_query {
                (form, String::new())
            } else {
                (format!("resCd={}&shopOrderNo=other", encode(&query_noise)), form)
            };
            let params = ReturnParams::parse(&query, body.as_bytes());
            prop_assert_eq!(params.res_cd, res_cd);
            prop_assert_eq!(params.res_msg, res_msg);
            prop_assert_eq!(params.shop_order_no, order);
            prop_assert_eq!(params.authorization_id, authorization);
        }
    }
}
