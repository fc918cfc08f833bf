//! Cancellation notifications (spec 05): matched to their order by its own pgCno, checked
//! against what can still be cancelled, and applied only once KICC's cancellation status check
//! shows them; anything else is kept as unmatched and changes nothing.

use super::{ACCEPTED, APPLIED, FollowUp, Processed, note, unmatched};
use crate::checkout::Checkout;
use crate::checkout::compensate::close_compensated_order;
use crate::db::compensations;
use crate::db::orders::{self, Transition, TransitionOutcome};
use crate::db::webhook_deliveries;
use crate::db::{AnyConnection, DbError};
use crate::domain::{Order, OrderEvent, OrderStatus};
use crate::kicc::webhook::CancelNotification;
use crate::kicc::{Outcome, TradeStatus};

/// A cancellation notification (spec 05) is applied only once KICC confirms it:
/// here it is matched to its order by the order's own pgCno alone, and must name a cancel
/// `0 < amount ≤ what remains` in the order's currency; then the status check after the ack
/// ([`Checkout::confirm_notified_cancel`]) applies it. Anything else is kept as unmatched,
/// changing nothing.
pub(super) fn apply_cancel(
    conn: &mut AnyConnection,
    c: &CancelNotification,
) -> Result<Processed, DbError> {
    let order = match c.pg_cno.as_deref() {
        Some(pg_cno) => orders::find_by_pg_cno(conn, pg_cno)?,
        None => None,
    };
    let Some(order) = order else {
        return unmatched(None);
    };
    let mismatch = |why: String| {
        unmatched(note(
            order.id,
            "cancel_unmatched",
            format!(
                "cancellation notification {} not applied: {why}",
                c.cancel_pg_cno
            ),
        ))
    };
    if let Some(no) = c.shop_order_no.as_deref()
        && no != order.shop_order_no.as_str()
    {
        return mismatch(format!("it names order {no}"));
    }
    if c.res_cd != "0000" {
        return Ok(Processed {
            outcome: APPLIED,
            applied: true,
            order_id: Some(order.id),
            follow_up: FollowUp::None,
            note: note(
                order.id,
                "cancel_failed",
                format!(
                    "cancellation notification {}: resCd {} — {}",
                    c.cancel_pg_cno, c.res_cd, c.res_msg
                ),
            ),
        });
    }
    if let Some(currency) = c.currency.as_deref()
        && currency != order.amount.currency().code()
    {
        return mismatch(format!(
            "its currency {currency} is not the order's {}",
            order.amount.currency().code()
        ));
    }
    // A compensation cancels what was approved; a merchant cancel at most what remains.
    let limit = match order.status {
        OrderStatus::Compensating | OrderStatus::NeedsAttention => order.amount.minor(),
        OrderStatus::Paid | OrderStatus::PartiallyCancelled | OrderStatus::CancelRequested => {
            order.remaining().minor()
        }
        status => {
            return mismatch(format!("the order is {status}"));
        }
    };
    let amount = match c.amount {
        Some(amount) if amount > 0 && amount <= limit => amount,
        Some(amount) => {
            return mismatch(format!(
                "amount {amount} is not between 1 and the {limit} that can be cancelled"
            ));
        }
        None => return mismatch("it names no amount".into()),
    };
    let cause = format!(
        "cancellation notification {}: {} cancelled on {}",
        c.cancel_pg_cno,
        amount,
        c.cancel_date.clone().unwrap_or_default()
    );
    Ok(Processed {
        outcome: ACCEPTED,
        applied: true,
        order_id: Some(order.id),
        follow_up: FollowUp::ConfirmCancel {
            order_id: order.id,
            pg_cno: order.pg_cno.clone().unwrap_or_default(),
            cancel_pg_cno: c.cancel_pg_cno.clone(),
            amount,
            cause: cause.clone(),
        },
        note: note(
            order.id,
            "cancel_notified",
            format!("{cause}: confirming with the status check"),
        ),
    })
}

/// Applies a cancel KICC confirmed, in the caller's write transaction: counted against the
/// order (partial cancels accumulate; the whole amount closes it), or closing a compensation.
fn settle_confirmed_cancel(
    conn: &mut AnyConnection,
    order: &Order,
    cancel_pg_cno: &str,
    amount: i64,
    cause: String,
) -> Result<(), DbError> {
    let job = compensations::open_for_cancel(conn, order.id, cancel_pg_cno)?;
    match order.status {
        OrderStatus::Compensating | OrderStatus::NeedsAttention => {
            if let Some(job) = &job {
                compensations::mark_confirmed(conn, job.id, Some(cancel_pg_cno))?;
            }
            close_compensated_order(conn, order.id, order.amount.minor(), &cause)
        }
        OrderStatus::Paid | OrderStatus::PartiallyCancelled | OrderStatus::CancelRequested
            if amount <= order.remaining().minor() =>
        {
            let before = order.cancelled.minor();
            let after = before + amount;
            let fully = after >= order.amount.minor();
            let t = Transition::new(
                order.id,
                order.status,
                OrderEvent::CancelSettled { fully },
                cause,
            )
            .with_cancelled_amount(before, after);
            match orders::transition(conn, &t)? {
                TransitionOutcome::Applied { .. } => {}
                // Moved under us: fail, so the follow-up's caller sees it and nothing is half
                // written.
                other => {
                    return Err(DbError::Corrupt(format!(
                        "order moved while applying a cancel: {other:?}"
                    )));
                }
            }
            if let Some(job) = &job {
                compensations::mark_confirmed(conn, job.id, Some(cancel_pg_cno))?;
            }
            Ok(())
        }
        status => orders::add_note(
            conn,
            order.id,
            "cancel_notified",
            &format!(
                "{cause}; not counted: the order is {status} with {} remaining",
                order.remaining()
            ),
        ),
    }
}

impl Checkout {
    /// A cancellation notification accepted on its face: applied if KICC's cancel status check
    /// shows that cancel of the order's pgCno, for the notified amount in the order's currency;
    /// otherwise kept as unmatched with no effect (its key released for KICC's own delivery).
    pub async fn confirm_notified_cancel(
        &self,
        order_id: i64,
        pg_cno: &str,
        cancel_pg_cno: &str,
        amount: i64,
        cause: String,
    ) -> Result<(), DbError> {
        let call = self
            .kicc
            .wechat_find_cancel(Some(order_id), pg_cno, cancel_pg_cno)
            .await
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let confirmation = match &call.outcome {
            Outcome::Accepted(status)
                if matches!(
                    status.status,
                    TradeStatus::Cancelled | TradeStatus::PartiallyCancelled
                ) && status.amount.is_none_or(|a| a == amount) =>
            {
                Ok(status.currency.clone())
            }
            Outcome::Accepted(status) => Err(format!(
                "KICC shows it {:?} for {}",
                status.status,
                status
                    .amount
                    .map_or_else(|| "no amount".to_owned(), |a| a.to_string())
            )),
            other => Err(format!("the status check ended {}", other.label())),
        };
        let cancel_pg_cno = cancel_pg_cno.to_owned();
        self.db
            .write(move |conn| {
                let order = orders::find_by_id(conn, order_id)?.ok_or(DbError::NotFound)?;
                let verdict = match &confirmation {
                    Ok(Some(currency)) if currency != order.amount.currency().code() => Err(
                        format!("KICC shows it in {currency}, not the order's currency"),
                    ),
                    Ok(_) => Ok(()),
                    Err(why) => Err(why.clone()),
                };
                match verdict {
                    Ok(()) => {
                        let cause = format!("{cause}, confirmed by KICC's status check");
                        settle_confirmed_cancel(conn, &order, &cancel_pg_cno, amount, cause)
                    }
                    Err(why) => {
                        webhook_deliveries::release_unconfirmed(conn, &cancel_pg_cno)?;
                        orders::add_note(
                            conn,
                            order_id,
                            "cancel_unconfirmed",
                            &format!("{cause}: not applied, {why}; kept as unmatched"),
                        )
                    }
                }
            })
            .await
    }
}
