//! The order state machine (DESIGN §5): every status, every event, and the one table that says
//! which event moves which status where. Pure: the repository (`db::orders::transition`) applies
//! a transition as a compare-and-set and records it in the timeline.
//!
//! `created → pending → (authorized → approving) → paid → cancel_requested →
//! cancelled | partially_cancelled`; `pending → expired | failed`; `approving → failed`; any
//! money-holding state → `compensating → cancelled`; `needs_attention` when a compensation
//! cannot finish. A payment KICC approves after the order stopped waiting for it (a late
//! approval) is never left unrecorded: `expired | failed → paid` when the merchant accepts late
//! payments, `expired | failed | cancelled → compensating` when it is refunded.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Saved; the gateway has not registered the payment yet.
    Created,
    /// KICC registered the payment (pgCno, payment page); waiting for the shopper.
    Pending,
    /// The shopper authenticated; the returnUrl brought an authorizationId.
    Authorized,
    /// The approval request is persisted and on its way (or its answer was lost).
    Approving,
    /// Approved, amount and integrity verified.
    Paid,
    /// The merchant asked KICC to cancel (full or partial); the cancellation webhook completes it.
    CancelRequested,
    /// Part of the amount was cancelled; the rest stays paid.
    PartiallyCancelled,
    /// The whole amount is cancelled (merchant cancel or compensation).
    Cancelled,
    /// Money may be held but must go back (spec 02/03/04 critical rules); a cancel job runs.
    Compensating,
    /// The payment window's life ended without a payment.
    Expired,
    /// Registration, authentication or approval failed; no money held.
    Failed,
    /// A compensation could not finish: a person must look (loud in the dashboard).
    NeedsAttention,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 12] = [
        OrderStatus::Created,
        OrderStatus::Pending,
        OrderStatus::Authorized,
        OrderStatus::Approving,
        OrderStatus::Paid,
        OrderStatus::CancelRequested,
        OrderStatus::PartiallyCancelled,
        OrderStatus::Cancelled,
        OrderStatus::Compensating,
        OrderStatus::Expired,
        OrderStatus::Failed,
        OrderStatus::NeedsAttention,
    ];

    /// The exact string stored in the database and shown by the API and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Pending => "pending",
            OrderStatus::Authorized => "authorized",
            OrderStatus::Approving => "approving",
            OrderStatus::Paid => "paid",
            OrderStatus::CancelRequested => "cancel_requested",
            OrderStatus::PartiallyCancelled => "partially_cancelled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Compensating => "compensating",
            OrderStatus::Expired => "expired",
            OrderStatus::Failed => "failed",
            OrderStatus::NeedsAttention => "needs_attention",
        }
    }

    /// States in which the gateway may hold the shopper's money although the order will not be
    /// fulfilled as paid — the states a compensating cancel may start from. `pending`,
    /// `authorized`, `expired` and `failed` are here because a payment can be found (webhook,
    /// status check) after we stopped expecting it: it must be returned, never kept unrecorded.
    pub fn may_hold_money(self) -> bool {
        matches!(
            self,
            OrderStatus::Pending
                | OrderStatus::Authorized
                | OrderStatus::Approving
                | OrderStatus::Paid
                | OrderStatus::Expired
                | OrderStatus::Failed
                | OrderStatus::NeedsAttention
        )
    }

    /// No event but a compensation can move the order any more.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Failed
        )
    }

    /// Applies `event` to an order in this status: the whole transition table.
    pub fn next(self, event: OrderEvent) -> Result<OrderStatus, TransitionError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let to = match (self, event) {
            (S::Created, E::PaymentRegistered) => S::Pending,
            (S::Created, E::RegistrationFailed) => S::Failed,
            (S::Pending, E::ShopperAuthenticated) => S::Authorized,
            (S::Authorized, E::ApprovalRequested) => S::Approving,
            // Approval verified, or the webhook / a status check confirmed the payment first.
            (S::Pending | S::Authorized | S::Approving, E::PaymentConfirmed) => S::Paid,
            (S::Pending | S::Authorized | S::Approving, E::PaymentFailed) => S::Failed,
            (S::Pending | S::Authorized, E::PaymentExpired) => S::Expired,
            // A status check found an approval for an order that had stopped waiting for it:
            // kept (`LATE_PAYMENTS=accept`) or refunded; a cancelled order's is always refunded.
            (S::Expired | S::Failed, E::LatePaymentAccepted) => S::Paid,
            (S::Expired | S::Failed | S::Cancelled, E::LateRefundStarted) => S::Compensating,
            (s, E::CompensationStarted) if s.may_hold_money() => S::Compensating,
            (S::Compensating | S::NeedsAttention, E::CompensationConfirmed) => S::Cancelled,
            (S::Compensating, E::CompensationStuck) => S::NeedsAttention,
            (S::Paid | S::PartiallyCancelled, E::CancelRequested) => S::CancelRequested,
            // A cancel may also be settled without our request (KICC's own console).
            (S::Paid | S::PartiallyCancelled | S::CancelRequested, E::CancelSettled { fully }) => {
                if fully {
                    S::Cancelled
                } else {
                    S::PartiallyCancelled
                }
            }
            (
                S::CancelRequested,
                E::CancelRejected {
                    partially_cancelled_before,
                },
            ) => {
                if partially_cancelled_before {
                    S::PartiallyCancelled
                } else {
                    S::Paid
                }
            }
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(to)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ValidationError::new("status", format!("`{s}` is not an order status")))
    }
}

/// What happened to an order. Each event is recorded in the timeline by its `name()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// Create-transaction accepted: pgCno and payment page URL received (spec 01).
    PaymentRegistered,
    /// Create-transaction declined or failed.
    RegistrationFailed,
    /// The returnUrl brought an authorizationId.
    ShopperAuthenticated,
    /// The approval request was persisted and is being sent (spec 02 / 03).
    ApprovalRequested,
    /// Approved with the order's amount and a valid msgAuthValue, or confirmed by a status check.
    PaymentConfirmed,
    /// Shopper cancelled, authentication failed, or approval declined.
    PaymentFailed,
    /// The payment window's life ended and a status check found no payment.
    PaymentExpired,
    /// KICC approved a payment for an order already expired or failed, and the merchant keeps
    /// late payments (`LATE_PAYMENTS=accept`).
    LatePaymentAccepted,
    /// KICC approved a payment for an order that no longer waits for one (expired or failed
    /// under `LATE_PAYMENTS=refund`, or cancelled): a compensating cancel returns it.
    LateRefundStarted,
    /// A compensating cancel was scheduled (amount mismatch, bad MAC, DB failure, timeout, …).
    CompensationStarted,
    /// The compensating cancel was confirmed by KICC.
    CompensationConfirmed,
    /// The compensating cancel failed too often; a person must look.
    CompensationStuck,
    /// The merchant requested a full or partial cancel.
    CancelRequested,
    /// KICC confirmed a cancel; `fully` when nothing remains paid.
    CancelSettled { fully: bool },
    /// KICC refused the merchant's cancel.
    CancelRejected { partially_cancelled_before: bool },
}

impl OrderEvent {
    /// Every event, with each value of its data: the columns of the transition table.
    pub const ALL: [OrderEvent; 17] = [
        OrderEvent::PaymentRegistered,
        OrderEvent::RegistrationFailed,
        OrderEvent::ShopperAuthenticated,
        OrderEvent::ApprovalRequested,
        OrderEvent::PaymentConfirmed,
        OrderEvent::PaymentFailed,
        OrderEvent::PaymentExpired,
        OrderEvent::LatePaymentAccepted,
        OrderEvent::LateRefundStarted,
        OrderEvent::CompensationStarted,
        OrderEvent::CompensationConfirmed,
        OrderEvent::CompensationStuck,
        OrderEvent::CancelRequested,
        OrderEvent::CancelSettled { fully: true },
        OrderEvent::CancelSettled { fully: false },
        OrderEvent::CancelRejected {
            partially_cancelled_before: true,
        },
        OrderEvent::CancelRejected {
            partially_cancelled_before: false,
        },
    ];

    /// The name recorded in `order_events.event`.
    pub fn name(self) -> &'static str {
        match self {
            OrderEvent::PaymentRegistered => "payment_registered",
            OrderEvent::RegistrationFailed => "registration_failed",
            OrderEvent::ShopperAuthenticated => "shopper_authenticated",
            OrderEvent::ApprovalRequested => "approval_requested",
            OrderEvent::PaymentConfirmed => "payment_confirmed",
            OrderEvent::PaymentFailed => "payment_failed",
            OrderEvent::PaymentExpired => "payment_expired",
            OrderEvent::LatePaymentAccepted => "late_payment_accepted",
            OrderEvent::LateRefundStarted => "late_refund_started",
            OrderEvent::CompensationStarted => "compensation_started",
            OrderEvent::CompensationConfirmed => "compensation_confirmed",
            OrderEvent::CompensationStuck => "compensation_stuck",
            OrderEvent::CancelRequested => "cancel_requested",
            OrderEvent::CancelSettled { fully: true } => "cancel_settled_full",
            OrderEvent::CancelSettled { fully: false } => "cancel_settled_partial",
            OrderEvent::CancelRejected { .. } => "cancel_rejected",
        }
    }
}

impl fmt::Display for OrderEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An event that the transition table does not allow from the order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not allowed for an order that is {from}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_are_the_designed_ones() {
        let names: Vec<_> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names.join(" "),
            "created pending authorized approving paid cancel_requested partially_cancelled \
             cancelled compensating expired failed needs_attention"
        );
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("Paid".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn event_names_are_distinct_per_effect() {
        let mut names: Vec<_> = OrderEvent::ALL.iter().map(|e| e.name()).collect();
        names.sort();
        names.dedup();
        // The two cancel_rejected variants share a name; their targets differ by data.
        assert_eq!(names.len(), OrderEvent::ALL.len() - 1);
    }
}
