//! The shopper's payment, end to end: placing an order and registering its payment
//! (`place`), the returnUrl and the approval saga (`approval`), and compensating cancels
//! (`compensate`). Every branch ends in a recorded state and a timeline entry (DESIGN §4, §5).

mod approval;
mod compensate;
mod merchant;
mod place;
pub mod reconciler;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

pub use approval::{ReturnOutcome, ReturnParams};
pub use compensate::RetryPolicy;
pub use merchant::MerchantError;
pub use place::{CheckoutError, Device, NextStep, OrderRequest, Placed, guest_customer_id};
pub use place::{IdempotencyKey, MAX_ORDER_LINES};

use crate::db::Db;
use crate::domain::LatePayments;
use crate::kicc::KiccClient;

/// The default cooldown of outsider-triggered status checks ([`Checkout::status_check_cooldown`]).
pub const STATUS_CHECK_COOLDOWN: Duration = Duration::from_secs(10);

/// Everything the checkout needs, shared by the web handlers and the JSON API.
pub struct Checkout {
    pub db: Db,
    pub kicc: Arc<KiccClient>,
    /// `{PUBLIC_BASE_URL}`: returnUrl and notifyUrl are built from it.
    pub base_url: String,
    /// A pending payment's life (`ORDER_EXPIRY_SECS`).
    pub order_expiry: Duration,
    /// Where the shopper authenticates for KICC Pay; `None`: KICC Pay is not offered.
    pub kiccpay_window: Option<String>,
    /// How failed cancels are retried.
    pub retry: RetryPolicy,
    /// What an approval for an expired or failed order does (`LATE_PAYMENTS`).
    pub late_payments: LatePayments,
    /// How long after a status check an outsider can trigger (a bare or failed returnUrl, the
    /// dashboard's re-check) the next one for the same order is skipped.
    pub status_check_cooldown: Duration,
    /// Cancels made while the database was unreachable, waiting to be recorded.
    in_process: std::sync::Mutex<Vec<compensate::InProcessCancel>>,
    /// Follow-ups (the status check after an ack, a compensation's first attempt) waiting,
    /// and how many workers run them (`webhooks::FollowUps`).
    follow_ups: std::sync::Mutex<webhooks::FollowUps>,
    /// Notifications being received: a follow-up yields to them (`webhooks::AckFirst`).
    acks: webhooks::AckFirst,
    /// Deliveries acked by one statement (`webhooks`, PostgreSQL).
    one_statement_acks: std::sync::atomic::AtomicU64,
}

impl Checkout {
    pub fn new(
        db: Db,
        kicc: Arc<KiccClient>,
        base_url: String,
        order_expiry: Duration,
        kiccpay_window: Option<String>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            db,
            kicc,
            base_url,
            order_expiry,
            kiccpay_window,
            retry,
            late_payments: LatePayments::default(),
            status_check_cooldown: STATUS_CHECK_COOLDOWN,
            in_process: std::sync::Mutex::new(Vec::new()),
            follow_ups: std::sync::Mutex::new(webhooks::FollowUps::default()),
            acks: webhooks::AckFirst::new(webhooks::FOLLOW_UP_MAX_YIELD),
            one_statement_acks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same checkout with `LATE_PAYMENTS` set.
    pub fn with_late_payments(mut self, late_payments: LatePayments) -> Self {
        self.late_payments = late_payments;
        self
    }

    /// Records in-process cancels every `every` until the app stops.
    pub fn spawn_recorder(self: &Arc<Self>, every: Duration) {
        let checkout = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if checkout.unrecorded_cancels() > 0 {
                    let written = checkout.record_in_process_cancels().await;
                    if written > 0 {
                        log::info!("recorded {written} in-process cancel(s)");
                    }
                }
            }
        });
    }

    pub fn return_url(&self) -> String {
        format!("{}/checkout/return", self.base_url)
    }

    pub fn payment_notify_url(&self) -> String {
        format!("{}/webhooks/kicc/payment", self.base_url)
    }

    pub fn cancel_notify_url(&self) -> String {
        format!("{}/webhooks/kicc/cancel", self.base_url)
    }
}
