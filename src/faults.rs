//! Faults a test build can switch on to break one KICC rule on purpose, so a test can show that
//! the integration review notices (issue 8), and a switch that takes a slower path than the
//! app's own, so a test can compare what the two write. Compiled only with the
//! `fault-injection` feature, which only the crate's own tests enable (a dev-dependency on
//! itself): a release build has no switch at all, and every check below is then a constant
//! `false`.

#[cfg(feature = "fault-injection")]
mod switches {
    use std::sync::atomic::{AtomicBool, Ordering};

    static SKIP_AMOUNT_CHECK: AtomicBool = AtomicBool::new(false);

    /// Breaks spec 02/03's amount rule: an approval whose amount differs is treated as equal.
    /// Process-wide: only for tests that run in a process of their own (nextest does).
    pub fn skip_amount_check(on: bool) {
        SKIP_AMOUNT_CHECK.store(on, Ordering::SeqCst);
    }

    pub(crate) fn amount_check_skipped() -> bool {
        SKIP_AMOUNT_CHECK.load(Ordering::SeqCst)
    }

    static IGNORE_LATE_PAYMENTS: AtomicBool = AtomicBool::new(false);

    /// Breaks the one rule of money (README, "How a payment is kept safe"): an approval for an
    /// order that stopped waiting for it is only noted, as before the rule (money kept, order
    /// expired). Process-wide.
    pub fn ignore_late_payments(on: bool) {
        IGNORE_LATE_PAYMENTS.store(on, Ordering::SeqCst);
    }

    pub(crate) fn late_payments_ignored() -> bool {
        IGNORE_LATE_PAYMENTS.load(Ordering::SeqCst)
    }

    static WEBHOOKS_IN_TRANSACTION: AtomicBool = AtomicBool::new(false);

    /// Every webhook delivery stored, handled and acked in its transaction, as on SQLite: on
    /// PostgreSQL the one statement that acks an expected approval or a resend is skipped
    /// (`checkout::webhooks`). Process-wide, like the switch above.
    pub fn webhooks_in_transaction(on: bool) {
        WEBHOOKS_IN_TRANSACTION.store(on, Ordering::SeqCst);
    }

    pub(crate) fn one_statement_skipped() -> bool {
        WEBHOOKS_IN_TRANSACTION.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "fault-injection")]
pub use switches::skip_amount_check;

#[cfg(feature = "fault-injection")]
pub use switches::{ignore_late_payments, webhooks_in_transaction};

#[cfg(feature = "fault-injection")]
pub(crate) use switches::{amount_check_skipped, late_payments_ignored, one_statement_skipped};

/// Without the feature: never.
#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn amount_check_skipped() -> bool {
    false
}

/// Without the feature: never.
#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn one_statement_skipped() -> bool {
    false
}

/// Without the feature: never.
#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn late_payments_ignored() -> bool {
    false
}
