//! What follows an ack, after it (spec 04/05: answer within 10 s, so nothing outbound sits
//! between receipt and ack): the queue of follow-ups (a notified approval's status check, a
//! compensation's first attempt, a failure's or a cancellation's confirmation), its workers,
//! and [`AckFirst`], which lets the acks in flight go first.

use super::FollowUp;
use crate::checkout::Checkout;
use crate::db::{DbError, orders};

/// How many follow-ups run at once: half the default pool, leaving the rest to the acks.
pub const FOLLOW_UPS_AT_ONCE: usize = 4;

/// Follow-ups waiting, and the workers running them (`Checkout::queue_follow_up`).
#[derive(Debug, Default)]
pub struct FollowUps {
    waiting: std::collections::VecDeque<FollowUp>,
    workers: usize,
}

/// A follow-up worker counted in [`FollowUps::workers`]; counted out if its task ends without
/// doing so itself (a panic in a follow-up), so the queue keeps its workers.
struct Worker<'a> {
    checkout: &'a Checkout,
    counted: bool,
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.checkout.follow_up_queue().workers -= 1;
        }
    }
}

/// The longest a follow-up waits for a moment with no notification in flight.
pub const FOLLOW_UP_MAX_YIELD: std::time::Duration = std::time::Duration::from_secs(1);

/// Acks before follow-ups. A notification must be acked within 10 s (spec 04/05); the status
/// check and the compensation that follow an ack have no deadline. In a burst both compete
/// for the same connections and cores, so each follow-up, before it starts, waits until no
/// notification is being received, or [`AckFirst::max_yield`] has passed: steady traffic can
/// slow the follow-ups but not stop them (and what they leave, the reconciler finishes).
#[derive(Debug)]
pub struct AckFirst {
    in_flight: std::sync::atomic::AtomicUsize,
    quiet: tokio::sync::Notify,
    max_yield: std::time::Duration,
}

/// One notification being received ([`AckFirst::receiving`]); done when dropped.
pub struct Receiving<'a>(&'a AckFirst);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if self
            .0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.quiet.notify_waiters();
        }
    }
}

impl AckFirst {
    pub fn new(max_yield: std::time::Duration) -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            quiet: tokio::sync::Notify::new(),
            max_yield,
        }
    }

    pub fn receiving(&self) -> Receiving<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Receiving(self)
    }

    /// Returns when no notification is being received, or after `max_yield`.
    pub async fn yield_to_acks(&self) {
        let deadline = tokio::time::Instant::now() + self.max_yield;
        loop {
            // Registered before the check, so a notification finishing in between still wakes
            // this one.
            let quiet = self.quiet.notified();
            if self.in_flight.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, quiet).await.is_err() {
                return;
            }
        }
    }
}

impl Checkout {
    /// Queues what follows an ack: the status check of a notified approval, or a
    /// compensation's first attempt. [`FOLLOW_UPS_AT_ONCE`] workers run them in order, each
    /// after the notifications being received ([`AckFirst`]). A waiting follow-up is its enum
    /// in the queue, not a task: a burst queues thousands (docs/BENCHMARKS.md: RSS). What does
    /// not finish here (a crash, a stop), the reconciler finishes.
    pub fn queue_follow_up(self: &std::sync::Arc<Self>, follow_up: FollowUp) {
        if matches!(follow_up, FollowUp::None) {
            return;
        }
        let start_worker = {
            let mut queue = self.follow_up_queue();
            queue.waiting.push_back(follow_up);
            let start = queue.workers < FOLLOW_UPS_AT_ONCE;
            if start {
                queue.workers += 1;
            }
            start
        };
        if start_worker {
            let checkout = self.clone();
            tokio::spawn(async move { checkout.work_follow_ups().await });
        }
    }

    fn follow_up_queue(&self) -> std::sync::MutexGuard<'_, FollowUps> {
        self.follow_ups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One worker: runs queued follow-ups until the queue is empty.
    async fn work_follow_ups(&self) {
        let mut worker = Worker {
            checkout: self,
            counted: true,
        };
        loop {
            let next = {
                let mut queue = self.follow_up_queue();
                match queue.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        // Counted out under the same lock that found the queue empty, so a
                        // follow-up queued now starts a worker.
                        queue.workers -= 1;
                        worker.counted = false;
                        return;
                    }
                }
            };
            self.acks.yield_to_acks().await;
            // Boxed: the worker's own future stays small; the status check's state (with its
            // HTTP request, kilobytes) lives only while it runs.
            Box::pin(self.run_follow_up(next)).await;
        }
    }

    async fn run_follow_up(&self, follow_up: FollowUp) {
        match follow_up {
            FollowUp::None => {}
            FollowUp::ConfirmPayment { order_id } => {
                if let Err(e) = self.confirm_notified_payment(order_id).await {
                    log::warn!("order {order_id}: notified approval not confirmed yet: {e}");
                }
            }
            FollowUp::ConfirmFailure { order_id, cause } => {
                if let Err(e) = self.confirm_notified_failure(order_id, cause).await {
                    log::warn!("order {order_id}: notified failure not checked: {e}");
                }
            }
            FollowUp::ConfirmCancel {
                order_id,
                pg_cno,
                cancel_pg_cno,
                amount,
                cause,
            } => {
                let confirmed = self
                    .confirm_notified_cancel(order_id, &pg_cno, &cancel_pg_cno, amount, cause)
                    .await;
                if let Err(e) = confirmed {
                    log::warn!("order {order_id}: cancellation {cancel_pg_cno} not applied: {e}");
                }
            }
            FollowUp::Compensate {
                order_id,
                job,
                plan,
            } => {
                let order = self
                    .db
                    .run(move |conn| orders::find_by_id(conn, order_id)?.ok_or(DbError::NotFound))
                    .await;
                match order {
                    Ok(order) => {
                        if let Err(e) = self.attempt_compensation(&order, job, &plan).await {
                            log::warn!("order {order_id}: compensation attempt failed: {e}");
                        }
                    }
                    Err(e) => log::warn!("order {order_id}: compensation not attempted: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::AckFirst;

    #[tokio::test(start_paused = true)]
    async fn a_follow_up_goes_at_once_when_no_notification_is_in_flight() {
        let acks = AckFirst::new(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        acks.yield_to_acks().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follow_up_waits_for_the_acks_in_flight() {
        let acks = std::sync::Arc::new(AckFirst::new(Duration::from_secs(1)));
        let (first, second) = (acks.receiving(), acks.receiving());
        let started = tokio::time::Instant::now();
        let waiting = {
            let acks = acks.clone();
            tokio::spawn(async move {
                acks.yield_to_acks().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "one notification is still in flight"
        );
        drop(second);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn steady_notifications_delay_a_follow_up_but_do_not_stop_it() {
        let acks = AckFirst::new(Duration::from_secs(1));
        let _forever = acks.receiving();
        let started = tokio::time::Instant::now();
        acks.yield_to_acks().await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
