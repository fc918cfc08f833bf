//! KICC's two notifications (spec 04 approval, spec 05 cancellation) applied to the same orders,
//! compensations and timeline as the returnUrl path (DESIGN §3, §4).
//!
//! Every delivery is stored (source, headers, body), applied and acked in one write
//! transaction; if the apply fails, that transaction is rolled back and the delivery stored
//! again with its failure. On PostgreSQL the two commonest deliveries, an approval finding its
//! order waiting for it and a resend of an applied key, are instead written by one statement
//! that is its own transaction (a round trip instead of four), which writes what the
//! transaction would; anything else is left to the transaction. Nothing outbound sits between
//! receipt and ack (spec 04/05: answer within 10 s): the status check confirming an approval
//! and any compensating cancel run after the ack ([`FollowUp`]), queued, and after the
//! notifications being received ([`AckFirst`]).
//! A notification already applied is acked `0000` without a second effect: at most one
//! delivery per pgCno / cancelPgCno is ever `applied` (a unique index), across threads and
//! instances.

mod cancel;
mod follow_ups;

pub use follow_ups::{AckFirst, FOLLOW_UP_MAX_YIELD, FOLLOW_UPS_AT_ONCE, FollowUps, Receiving};

use super::Checkout;
use super::approval::{CheckedApproval, is_late};
use super::compensate::{CancelPlan, start_compensation};
use crate::db::orders;
use crate::db::webhook_deliveries::{self, Answered, NewDelivery};
use crate::db::{AnyConnection, DbError, write_transaction};
use crate::domain::{Currency, Money, Order, OrderEvent, OrderStatus, PayMethod, ShopOrderNo};
use crate::kicc::webhook::{Notification, PaymentNotification, ack_body, parse_notification};
use crate::kicc::{Outcome, TradeStatus};

/// Largest body accepted (spec bodies are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Our ack codes besides `0000` (KICC resends on any of them).
pub mod codes {
    pub const OK: &str = "0000";
    /// Spec 04/05's example of a failed internal process.
    pub const DB_ERROR: &str = "5001";
    pub const MALFORMED: &str = "9001";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "9002";
    pub const TOO_LARGE: &str = "9003";
    pub const FORBIDDEN: &str = "9403";
}

/// A delivery as the handler received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub route: &'static str,
    pub source_ip: String,
    /// Whether the source IP is allowed (`WEBHOOK_ALLOWED_IPS`, after `TRUSTED_PROXIES`).
    pub allowed: bool,
    pub headers: String,
    pub body: Vec<u8>,
    pub json_content_type: bool,
    /// The body was longer than [`MAX_BODY`] (and `body` holds its beginning).
    pub too_large: bool,
}

/// What to answer: HTTP status and a KICC-shaped body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub http_status: u16,
    pub res_cd: String,
    pub body: String,
}

impl Ack {
    fn new(http_status: u16, res_cd: &str, res_msg: &str, pg_cno: &str) -> Self {
        Self {
            http_status,
            res_cd: res_cd.to_owned(),
            body: ack_body(res_cd, res_msg, pg_cno),
        }
    }

    /// A source not allowed: 403 `9403`, stored or not (`web::webhooks` stores only some).
    pub fn forbidden(source_ip: &str, pg_cno: &str) -> Self {
        let message = format!("source {source_ip} is not allowed");
        Self::new(403, codes::FORBIDDEN, &message, pg_cno)
    }
}

/// Work that follows the ack.
#[derive(Debug, Clone)]
pub enum FollowUp {
    None,
    /// Confirm a notified approval with the status check, then mark the order paid.
    ConfirmPayment {
        order_id: i64,
    },
    /// A failure notification: ask KICC before the order fails.
    ConfirmFailure {
        order_id: i64,
        cause: String,
    },
    /// A cancellation notification: applied only once KICC's status check confirms it.
    ConfirmCancel {
        order_id: i64,
        pg_cno: String,
        cancel_pg_cno: String,
        amount: i64,
        cause: String,
    },
    /// Make the first attempt of a compensating cancel.
    Compensate {
        order_id: i64,
        job: i64,
        plan: CancelPlan,
    },
}

/// How processing ended inside the transaction.
struct Processed {
    outcome: &'static str,
    /// The delivery keeps its claim on its key's effect (stored with its ack:
    /// `webhook_deliveries::finish`).
    applied: bool,
    order_id: Option<i64>,
    follow_up: FollowUp,
    /// The note the handling leaves on the order's timeline, written with the ack
    /// (`webhook_deliveries::finish`: one statement on PostgreSQL).
    note: Option<PendingNote>,
}

impl Processed {
    /// A delivery whose key another delivery applied: acked, no second effect.
    fn duplicate() -> Self {
        Self {
            outcome: DUPLICATE,
            applied: false,
            order_id: None,
            follow_up: FollowUp::None,
            note: None,
        }
    }
}

/// A timeline note to write with the delivery's ack: the last write of a handling that writes
/// one.
struct PendingNote {
    order_id: i64,
    event: &'static str,
    cause: String,
}

impl PendingNote {
    fn as_note(&self) -> orders::Note<'_> {
        orders::Note {
            order_id: self.order_id,
            event: self.event,
            cause: &self.cause,
        }
    }
}

/// How far a delivery got in its transaction.
enum Stage {
    Refused,
    Applied(Processed),
}

/// A delivery as stored: what `webhook_deliveries` keeps of it.
struct Incoming {
    kind: &'static str,
    route: &'static str,
    source_ip: String,
    headers: String,
    body: String,
    dedupe_key: Option<String>,
    pg_cno: Option<String>,
    shop_order_no: Option<String>,
}

impl Incoming {
    fn as_new(&self) -> NewDelivery<'_> {
        NewDelivery {
            kind: self.kind,
            route: self.route,
            source_ip: &self.source_ip,
            headers: &self.headers,
            body: &self.body,
            dedupe_key: self.dedupe_key.as_deref(),
            pg_cno: self.pg_cno.as_deref(),
            shop_order_no: self.shop_order_no.as_deref(),
        }
    }
}

impl Checkout {
    /// Stores, checks, applies and acks one delivery; returns the ack and what to do after it.
    pub async fn receive_notification(&self, delivery: Delivery) -> (Ack, FollowUp) {
        let _receiving = self.acks.receiving();
        let parsed = if delivery.too_large || !delivery.json_content_type {
            None
        } else {
            Some(parse_notification(&delivery.body))
        };
        let notification = parsed.as_ref().and_then(|p| p.as_ref().ok()).cloned();
        // Spec 04: an approval names its order by shopOrderNo; it is read with the delivery's
        // insert.
        let order_no = match &notification {
            Some(Notification::Payment(p)) => p
                .shop_order_no
                .as_deref()
                .and_then(|no| ShopOrderNo::parse(no).ok()),
            _ => None,
        };
        let (kind, dedupe, pg_cno, shop_order_no) = match &notification {
            Some(n @ Notification::Payment(p)) => (
                n.kind(),
                Some(n.dedupe_key().to_owned()),
                Some(p.pg_cno.clone()),
                p.shop_order_no.clone(),
            ),
            Some(n @ Notification::Cancel(c)) => (
                n.kind(),
                Some(n.dedupe_key().to_owned()),
                c.pg_cno.clone(),
                c.shop_order_no.clone(),
            ),
            None => ("unknown", None, None, None),
        };
        let echo = notification
            .as_ref()
            .map(|n| n.pg_cno().to_owned())
            .unwrap_or_default();

        // Refusals are decided by the delivery alone: recorded, nothing else changes.
        let refusal = if !delivery.allowed {
            Some(Ack::forbidden(&delivery.source_ip, &echo))
        } else if delivery.too_large {
            Some(Ack::new(
                413,
                codes::TOO_LARGE,
                &format!("body larger than {MAX_BODY} bytes"),
                &echo,
            ))
        } else if !delivery.json_content_type {
            Some(Ack::new(
                415,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
                &echo,
            ))
        } else if let Some(Err(e)) = &parsed {
            Some(Ack::new(200, codes::MALFORMED, &e.to_string(), &echo))
        } else {
            None
        };
        let refused_as = if delivery.allowed {
            "rejected"
        } else {
            "refused"
        };
        let ok = Ack::new(200, codes::OK, "Success", &echo);
        let failed = Ack::new(200, codes::DB_ERROR, "Internal DB Error", &echo);

        // One write transaction: the delivery stored, then applied, then its ack. If the apply
        // or the ack fails, the whole transaction is rolled back, the delivery with it, and the
        // delivery is stored again with how it ended (below): no savepoint, which on PostgreSQL
        // would be two more round trips (the ack is four: `BEGIN`, two statements, `COMMIT`).
        // If even that fails, KICC must resend (spec 04: non-0000).
        let incoming = std::sync::Arc::new(Incoming {
            kind,
            route: delivery.route,
            source_ip: delivery.source_ip,
            headers: delivery.headers,
            body: String::from_utf8_lossy(&delivery.body).into_owned(),
            dedupe_key: dedupe,
            pg_cno,
            shop_order_no,
        });
        // PostgreSQL: a resend, or an approval finding its order as notified, in one statement
        // instead of the transaction below.
        if let (None, Some(Notification::Payment(p))) = (&refusal, &notification)
            && let Some(acked) = self
                .accept_in_one_statement(&incoming, p, order_no.as_ref(), &ok)
                .await
        {
            return match acked {
                Ok(follow_up) => (ok, follow_up),
                Err(e) => {
                    log::error!("webhook from {} not stored: {e}", incoming.source_ip);
                    (failed, FollowUp::None)
                }
            };
        }
        let stored = incoming.clone();
        let n = notification.clone();
        let refused = refusal.as_ref().map(|a| (a.res_cd.clone(), a.body.clone()));
        let (ok_cd, ok_body) = (ok.res_cd.clone(), ok.body.clone());
        // Through the writer (group commit on SQLite): this closure is a transaction's body,
        // run again alone if its batch cannot commit, and answered only once committed. Its
        // commit can still fail after the apply ran; `reached_apply` tells the caller then
        // that an approval may have been notified and not written (spec 04).
        let reached_apply = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reached = reached_apply.clone();
        let result = self
            .db
            .write(move |conn| -> Result<Stage, DbError> {
                reached.store(false, std::sync::atomic::Ordering::Relaxed);
                let new = stored.as_new();
                // A refusal: the answer is known, so it is stored with the delivery in one
                // insert.
                if let Some((cd, body)) = &refused {
                    let answered = Answered {
                        outcome: refused_as,
                        ack_res_cd: cd,
                        ack_body: body,
                    };
                    webhook_deliveries::insert_answered(conn, &new, answered)?;
                    return Ok(Stage::Refused);
                }
                // Stored, and answered at once when its key was applied before (KICC's
                // resends), in one statement.
                let n = n.as_ref().expect("parsed when not refused");
                let duplicate = Answered {
                    outcome: DUPLICATE,
                    ack_res_cd: &ok_cd,
                    ack_body: &ok_body,
                };
                // Otherwise stored claiming its key: a delivery of the same key applied first
                // by a transaction still committing makes this fail with a unique violation,
                // before any effect.
                let mut inserted = webhook_deliveries::insert_unless_applied(
                    conn,
                    &new,
                    n.dedupe_key(),
                    duplicate,
                    expected_outcome(n),
                    order_no.as_ref(),
                )?;
                if inserted.duplicate {
                    return Ok(Stage::Applied(Processed::duplicate()));
                }
                reached.store(true, std::sync::atomic::Ordering::Relaxed);
                // The effect, then the ack (with the handling's note, one statement on
                // PostgreSQL).
                let processed = apply(conn, n, inserted.order.take())?;
                let handled = webhook_deliveries::Handled {
                    answered: Answered {
                        outcome: processed.outcome,
                        ack_res_cd: &ok_cd,
                        ack_body: &ok_body,
                    },
                    applied: processed.applied,
                    order_id: processed.order_id,
                    note: processed.note.as_ref().map(PendingNote::as_note),
                };
                webhook_deliveries::finish(conn, &inserted, handled)?;
                Ok(Stage::Applied(processed))
            })
            .await;
        let failure = match result {
            Ok(Stage::Refused) => {
                return (refusal.expect("refused"), FollowUp::None);
            }
            Ok(Stage::Applied(processed)) => {
                let notification = notification.as_ref().expect("applied when parsed");
                log::info!(
                    "webhook {kind} {} from {}: {}",
                    notification.dedupe_key(),
                    incoming.source_ip,
                    processed.outcome
                );
                return (ok, processed.follow_up);
            }
            Err(e) if webhook_deliveries::is_claimed_by_another(&e) => {
                // Another delivery of the same key was applied first, committing while this
                // one was stored: rolled back before any effect, stored again as a duplicate
                // and acked.
                self.store_answered(incoming, DUPLICATE, &ok).await;
                return (ok, FollowUp::None);
            }
            Err(e) if reached_apply.load(std::sync::atomic::Ordering::Relaxed) => e,
            Err(e) => {
                log::error!("webhook from {} not stored: {e}", incoming.source_ip);
                return (failed, FollowUp::None);
            }
        };
        // Rolled back after the delivery was stored claiming its key: stored again, answered.
        self.store_answered(incoming, "failed", &failed).await;
        let notification = notification.expect("applied when parsed");
        log::error!(
            "webhook {kind} {}: the update failed: {failure}",
            notification.dedupe_key()
        );
        // Spec 04: an approval notified but not written must be cancelled.
        let follow_up = match &notification {
            Notification::Payment(p) if p.res_cd == "0000" => {
                self.cancel_unwritten_approval(p, &failure).await
            }
            _ => FollowUp::None,
        };
        (failed, follow_up)
    }

    /// PostgreSQL: an approval notification stored, handled and acked `0000` by one statement
    /// ([`webhook_deliveries::accept_approval`], one round trip instead of four) when it is a
    /// resend of an applied key, or when its order is the WeChat order it names, with its pgCno
    /// (or none yet), amount and currency, waiting for its approval: what `apply_payment` then
    /// accepts, written the same. `None` in every other case, and when the statement failed
    /// (having written nothing): the transaction decides then. `Some(Err)` only when no
    /// connection could be had, which the transaction would not get either.
    async fn accept_in_one_statement(
        &self,
        incoming: &std::sync::Arc<Incoming>,
        p: &PaymentNotification,
        order_no: Option<&ShopOrderNo>,
        ok: &Ack,
    ) -> Option<Result<FollowUp, DbError>> {
        if self.db.backend() != crate::db::Backend::Postgres
            || p.res_cd != codes::OK
            || crate::faults::one_statement_skipped()
        {
            return None;
        }
        let (order_no, key) = (order_no?.clone(), incoming.dedupe_key.clone()?);
        // `apply_payment` compares the code as sent; `Currency`'s parse accepts exactly those.
        let currency: Currency = p.currency.as_deref()?.parse().ok()?;
        let amount = Money::from_minor(p.amount?, currency).ok()?;
        let cause = accepted_cause(&p.pg_cno, amount);
        let (stored, pg_cno, ok_cd, ok_body) = (
            incoming.clone(),
            p.pg_cno.clone(),
            ok.res_cd.clone(),
            ok.body.clone(),
        );
        let result = self
            .db
            .run(move |conn| {
                let expected = webhook_deliveries::ExpectedApproval {
                    dedupe_key: &key,
                    order_no: &order_no,
                    pay_method: PayMethod::Wechat.as_str(),
                    pg_cno: &pg_cno,
                    amount: amount.minor(),
                    currency: currency.code(),
                    statuses: WAITING_FOR_APPROVAL.map(OrderStatus::as_str),
                    duplicate: Answered {
                        outcome: DUPLICATE,
                        ack_res_cd: &ok_cd,
                        ack_body: &ok_body,
                    },
                    accepted: ACCEPTED,
                    event: APPROVAL_NOTE,
                    cause: &cause,
                };
                webhook_deliveries::accept_approval(conn, &stored.as_new(), &expected)
            })
            .await;
        let (outcome, follow_up) = match result {
            Ok(Some(webhook_deliveries::Accepted::Applied { order_id, .. })) => {
                (ACCEPTED, FollowUp::ConfirmPayment { order_id })
            }
            Ok(Some(webhook_deliveries::Accepted::Duplicate { .. })) => (DUPLICATE, FollowUp::None),
            Ok(None) => return None,
            Err(e @ DbError::Pool(_)) => return Some(Err(e)),
            Err(e) => {
                log::warn!(
                    "webhook from {}: not written by one statement ({e}); in a transaction",
                    incoming.source_ip
                );
                return None;
            }
        };
        self.one_statement_acks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::info!(
            "webhook {} {} from {}: {outcome}",
            incoming.kind,
            incoming.dedupe_key.as_deref().unwrap_or_default(),
            incoming.source_ip,
        );
        Some(Ok(follow_up))
    }

    /// Deliveries acked by [`Self::accept_in_one_statement`] (`/metrics`).
    pub fn one_statement_acks(&self) -> u64 {
        self.one_statement_acks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores a delivery whose transaction was rolled back, with how it ended and its answer
    /// (its own write transaction). A failure is logged: the answer is not `0000` then, or the
    /// key was applied by another delivery, so nothing is lost.
    async fn store_answered(
        &self,
        incoming: std::sync::Arc<Incoming>,
        outcome: &'static str,
        ack: &Ack,
    ) {
        let (cd, body) = (ack.res_cd.clone(), ack.body.clone());
        let stored = incoming.clone();
        let result = self
            .db
            .write(move |conn| {
                let answered = Answered {
                    outcome,
                    ack_res_cd: &cd,
                    ack_body: &body,
                };
                webhook_deliveries::insert_answered(conn, &stored.as_new(), answered)
            })
            .await;
        if let Err(e) = result {
            log::error!(
                "webhook from {} ({outcome}) not stored: {e}",
                incoming.source_ip
            );
        }
    }

    /// Spec 04 "DB Failure": the notification's order update failed, so the payment is cancelled
    /// — through a job when the database takes one, in-process when it does not.
    async fn cancel_unwritten_approval(
        &self,
        p: &PaymentNotification,
        error: &DbError,
    ) -> FollowUp {
        let Some(no) = p
            .shop_order_no
            .as_deref()
            .and_then(|n| ShopOrderNo::parse(n).ok())
        else {
            return FollowUp::None;
        };
        let Ok(Some(order)) = self
            .db
            .run(move |conn| orders::find_by_shop_order_no(conn, &no))
            .await
        else {
            // Not even readable: cancel by the notification's own pgCno, in-process.
            log::error!(
                "webhook {}: order unreadable after a failed update ({error}); nothing to cancel against",
                p.pg_cno
            );
            return FollowUp::None;
        };
        let reason =
            format!("the approval notification could not be written ({error}): cancel (spec 04)");
        let plan = CancelPlan::WechatRevise {
            pg_cno: p.pg_cno.clone(),
            amount: p.amount.unwrap_or(order.amount.minor()),
        };
        let (id, api, amount, currency, cause) = (
            order.id,
            plan.api(),
            p.amount.unwrap_or(order.amount.minor()),
            order.amount.currency().code(),
            reason.clone(),
        );
        let started = self
            .db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    start_compensation(
                        conn,
                        id,
                        None,
                        OrderEvent::CompensationStarted,
                        api,
                        amount,
                        currency,
                        &cause,
                        None,
                    )
                })
            })
            .await;
        match started {
            Ok(Some(job)) => FollowUp::Compensate {
                order_id: order.id,
                job,
                plan,
            },
            Ok(None) => FollowUp::None,
            Err(_) => {
                self.cancel_in_process(&order, &plan, &reason).await;
                FollowUp::None
            }
        }
    }

    /// Spec 04: confirm a notified approval with `/api/trades/wechatpay/find` and mark the
    /// order paid (amounts compared again; a difference is cancelled).
    pub async fn confirm_notified_payment(&self, order_id: i64) -> Result<Order, DbError> {
        // One write transaction: the order read and, when it still waits, its status check
        // recorded (committed before it is sent, DESIGN §4).
        let kicc = self.kicc.clone();
        let (order, call) = self
            .db
            .write(move |conn| {
                let order = orders::find_by_id(conn, order_id)?.ok_or(DbError::NotFound)?;
                // Waiting, or a late payment: either way KICC's answer settles it.
                let waiting = waits_for_approval(order.status) || is_late(order.status);
                let (true, Some(pg_cno)) = (waiting, order.pg_cno.as_deref()) else {
                    return Ok((order, None));
                };
                let prepared = kicc
                    .wechat_find_request(Some(order.id), pg_cno)
                    .map_err(|e| DbError::Corrupt(e.to_string()))?;
                let call = prepared.record(conn)?;
                Ok((order, Some(call)))
            })
            .await?;
        let Some(call) = call else {
            return Ok(order);
        };
        let (call, completion) = self.kicc.send_recorded(call).await;
        let status = match call.outcome {
            Outcome::Accepted(status) if status.status == TradeStatus::Approved => status,
            Outcome::Accepted(status) => {
                // KICC has no approval: the notification was not KICC's (or came before its
                // approval). Kept as unmatched, its claim on the pgCno released, so that
                // KICC's own notification of the payment is applied, not taken for a resend.
                self.kicc.write_completion(completion).await;
                let (pg_cno, id) = (order.pg_cno.clone().unwrap_or_default(), order.id);
                let note = format!(
                    "approval notification not confirmed: KICC's status is {:?}; kept as unmatched",
                    status.status
                );
                self.db
                    .write(move |conn| {
                        if webhook_deliveries::release_unconfirmed(conn, &pg_cno)? {
                            orders::add_note(conn, id, "webhook_unconfirmed", &note)?;
                        }
                        Ok(())
                    })
                    .await?;
                return Ok(order);
            }
            _ => {
                self.kicc.write_completion(completion).await;
                return Ok(order);
            }
        };
        // The order's own pgCno (the one checked), as KICC's reply may leave it out.
        let pg_cno = order.pg_cno.clone().unwrap_or(status.pg_cno.clone());
        let found = CheckedApproval {
            // Written with the `paid` transition, in one commit.
            completion: Some(completion),
            ..CheckedApproval::from_status(pg_cno, status, call.call_id)
        };
        self.settle_checked(&order, found, "approval notification confirmed (spec 04)")
            .await
    }
}

impl Checkout {
    /// A failure notification for an order waiting for its approval: KICC's status check
    /// decides. Approved → settled as any approval; a trade KICC shows cancelled or
    /// voided → the order fails; anything else (KICC still waits, TS00) → the order stays
    /// waiting until it is paid or expires, with a note.
    pub async fn confirm_notified_failure(
        &self,
        order_id: i64,
        cause: String,
    ) -> Result<Order, DbError> {
        let order = self
            .db
            .run(move |conn| orders::find_by_id(conn, order_id)?.ok_or(DbError::NotFound))
            .await?;
        let (true, Some(pg_cno)) = (waits_for_approval(order.status), order.pg_cno.clone()) else {
            return Ok(order);
        };
        let call = self
            .kicc
            .wechat_find(Some(order.id), &pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let verdict = match call.outcome {
            Outcome::Accepted(status) if status.status == TradeStatus::Approved => {
                let found = CheckedApproval::from_status(pg_cno, status, call.call_id);
                let context = format!("{cause}, but the status check found it approved");
                return self.settle_checked(&order, found, &context).await;
            }
            Outcome::Accepted(status)
                if matches!(status.status, TradeStatus::Cancelled | TradeStatus::Voided) =>
            {
                let cause = format!("{cause}; KICC confirms: status {:?}", status.status);
                return self
                    .transition(
                        &order,
                        order.status,
                        OrderEvent::PaymentFailed,
                        cause,
                        orders::OrderPatch::default(),
                    )
                    .await;
            }
            Outcome::Accepted(status) => format!("KICC's status is {:?}", status.status),
            other => format!("the status check ended {}", other.label()),
        };
        let note = format!(
            "{cause}: not confirmed ({verdict}); the order stays {} until it is paid or expires",
            order.status
        );
        self.db
            .run(move |conn| orders::add_note(conn, order_id, "failure_unconfirmed", &note))
            .await?;
        Ok(order)
    }
}

/// The statuses of an order still waiting for its approval (a notified one is confirmed then).
const WAITING_FOR_APPROVAL: [OrderStatus; 3] = [
    OrderStatus::Pending,
    OrderStatus::Authorized,
    OrderStatus::Approving,
];

/// Whether an order still waits for its approval.
fn waits_for_approval(status: OrderStatus) -> bool {
    WAITING_FOR_APPROVAL.contains(&status)
}

/// The timeline note of an approval notification.
const APPROVAL_NOTE: &str = "webhook_approval";

/// The note's cause when the approval is accepted, to be confirmed by a status check.
fn accepted_cause(pg_cno: &str, amount: Money) -> String {
    format!(
        "approval notification (pgCno {pg_cno}, amount {amount}): confirming with the status check"
    )
}

/// A delivery's outcome when its notification took effect.
const APPLIED: &str = "applied";
/// An approval's outcome when its order waits for it: applied, and confirmed by a status check
/// after the ack.
const ACCEPTED: &str = "accepted";
/// A failure notification's outcome: noted (and checked with KICC), never claiming its key.
const FAILURE_NOTED: &str = "failure_noted";
/// The outcome of a delivery whose key was applied before (KICC's resends): acked, not applied.
const DUPLICATE: &str = "duplicate";

/// The outcome a notification's handling usually ends with, stored with its delivery's claim
/// (`webhook_deliveries::insert_unless_applied`), so that the ack alone is written after it: an
/// approval for the order waiting for it (spec 04). A cancellation's order is found by its
/// handling, so its delivery is always finished in full.
fn expected_outcome(notification: &Notification) -> &'static str {
    match notification {
        Notification::Payment(_) => ACCEPTED,
        Notification::Cancel(_) => APPLIED,
    }
}

/// Applies a notification inside the caller's transaction, which has stored its delivery
/// claiming its key (`receive_notification`): no other delivery of the key is applied. What it
/// returns without `applied` releases the key when the ack is stored. `order` is the order an
/// approval names by its shopOrderNo, read with the delivery's insert.
fn apply(
    conn: &mut AnyConnection,
    notification: &Notification,
    order: Option<Order>,
) -> Result<Processed, DbError> {
    match notification {
        Notification::Payment(p) => apply_payment(conn, p, order),
        Notification::Cancel(c) => cancel::apply_cancel(conn, c),
    }
}

fn unmatched(note: Option<PendingNote>) -> Result<Processed, DbError> {
    Ok(Processed {
        outcome: "unmatched",
        applied: false,
        order_id: None,
        follow_up: FollowUp::None,
        note,
    })
}

fn note(order_id: i64, event: &'static str, cause: String) -> Option<PendingNote> {
    Some(PendingNote {
        order_id,
        event,
        cause,
    })
}

fn apply_payment(
    conn: &mut AnyConnection,
    p: &PaymentNotification,
    order: Option<Order>,
) -> Result<Processed, DbError> {
    // Spec 04: find the order by shopOrderNo (read with the delivery's insert) and pgCno.
    let Some(order) = order.filter(|o| o.pay_method == PayMethod::Wechat) else {
        return unmatched(None);
    };
    if order
        .pg_cno
        .as_deref()
        .is_some_and(|known| known != p.pg_cno)
    {
        return unmatched(note(
            order.id,
            "webhook_unmatched",
            format!(
                "approval notification for pgCno {} does not match the order's pgCno",
                p.pg_cno
            ),
        ));
    }
    let done = |outcome, follow_up, note| {
        Ok(Processed {
            outcome,
            applied: true,
            order_id: Some(order.id),
            follow_up,
            note,
        })
    };
    if p.res_cd != "0000" {
        // A failure never claims the pgCno: KICC's notification of a payment made afterwards
        // must still be applied, not taken for a resend of this one.
        let cause = format!("approval notification: resCd {} — {}", p.res_cd, p.res_msg);
        let (follow_up, note) = if waits_for_approval(order.status) {
            // Not failed on the notification's word: KICC's status check decides, after the
            // ack.
            (
                FollowUp::ConfirmFailure {
                    order_id: order.id,
                    cause: cause.clone(),
                },
                note(
                    order.id,
                    "webhook_failure",
                    format!("{cause}: confirming with the status check"),
                ),
            )
        } else {
            (
                FollowUp::None,
                note(
                    order.id,
                    "webhook_failure_ignored",
                    format!("{cause} (order is {})", order.status),
                ),
            )
        };
        return Ok(Processed {
            outcome: FAILURE_NOTED,
            applied: false,
            order_id: Some(order.id),
            follow_up,
            note,
        });
    }
    let amount_ok = p.amount == Some(order.amount.minor());
    let currency_ok = p
        .currency
        .as_deref()
        .is_none_or(|c| c == order.amount.currency().code());
    if !amount_ok || !currency_ok {
        // Spec 04 "Integrity Check": cancel immediately (the cancel itself runs after the ack).
        let reason = format!(
            "approval notification says {} {} for an order of {}: cancel (spec 04)",
            p.amount
                .map(|a| a.to_string())
                .unwrap_or_else(|| "no amount".into()),
            p.currency.clone().unwrap_or_default(),
            order.amount
        );
        let amount = p.amount.unwrap_or(order.amount.minor());
        let job = if order.status.may_hold_money() {
            start_compensation(
                conn,
                order.id,
                None,
                OrderEvent::CompensationStarted,
                "wechat_revise",
                amount,
                order.amount.currency().code(),
                &reason,
                None,
            )?
        } else {
            None
        };
        let Some(job) = job else {
            return done(
                APPLIED,
                FollowUp::None,
                note(
                    order.id,
                    "webhook_mismatch",
                    format!("{reason}; the order is already {}", order.status),
                ),
            );
        };
        let plan = CancelPlan::WechatRevise {
            pg_cno: p.pg_cno.clone(),
            amount,
        };
        return done(
            APPLIED,
            FollowUp::Compensate {
                order_id: order.id,
                job,
                plan,
            },
            None,
        );
    }
    match order.status {
        status if waits_for_approval(status) => done(
            ACCEPTED,
            FollowUp::ConfirmPayment { order_id: order.id },
            note(
                order.id,
                APPROVAL_NOTE,
                accepted_cause(&p.pg_cno, order.amount),
            ),
        ),
        // A late payment: never only noted. The status check confirms it, then the
        // order is paid (`LATE_PAYMENTS=accept`) or the money refunded.
        status if is_late(status) => {
            // Should the follow-up be lost (a crash after the ack), the reconciler's late check
            // asks KICC again: the acked payment is never left unrecorded.
            let soon = crate::db::now() + orders::LATE_CHECKS[0];
            orders::schedule_late_check(conn, order.id, Some(soon))?;
            done(
                ACCEPTED,
                FollowUp::ConfirmPayment { order_id: order.id },
                note(
                    order.id,
                    APPROVAL_NOTE,
                    format!(
                        "approval notification (pgCno {}, amount {}) for an order that is {status}: a late payment, confirming with the status check",
                        p.pg_cno, order.amount
                    ),
                ),
            )
        }
        status => done(
            APPLIED,
            FollowUp::None,
            note(
                order.id,
                APPROVAL_NOTE,
                format!(
                    "approval notification (pgCno {}); the order is already {status}",
                    p.pg_cno
                ),
            ),
        ),
    }
}
