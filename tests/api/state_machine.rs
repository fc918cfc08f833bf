//! The order state machine through the repository, on both backends: every (state, event) pair
//! of the transition table, compare-and-set races, and the timeline rows they leave.

use std::sync::{Arc, Barrier};

use kicc_checkout::db::orders::{self, OrderPatch, Transition, TransitionOutcome};
use kicc_checkout::db::{AnyConnection, Db};
use kicc_checkout::domain::{Order, OrderEvent as E, OrderStatus as S};

use crate::helpers::sample_order;

/// The table as DESIGN §5 describes it, written out independently of `OrderStatus::next`:
/// every allowed (from, event, to). Every pair not listed must be refused.
const ALLOWED: &[(S, E, S)] = &[
    (S::Created, E::PaymentRegistered, S::Pending),
    (S::Created, E::RegistrationFailed, S::Failed),
    (S::Pending, E::ShopperAuthenticated, S::Authorized),
    (S::Pending, E::PaymentConfirmed, S::Paid),
    (S::Pending, E::PaymentFailed, S::Failed),
    (S::Pending, E::PaymentExpired, S::Expired),
    (S::Pending, E::CompensationStarted, S::Compensating),
    (S::Authorized, E::ApprovalRequested, S::Approving),
    (S::Authorized, E::PaymentConfirmed, S::Paid),
    (S::Authorized, E::PaymentFailed, S::Failed),
    (S::Authorized, E::PaymentExpired, S::Expired),
    (S::Authorized, E::CompensationStarted, S::Compensating),
    (S::Approving, E::PaymentConfirmed, S::Paid),
    (S::Approving, E::PaymentFailed, S::Failed),
    (S::Approving, E::CompensationStarted, S::Compensating),
    (S::Paid, E::CompensationStarted, S::Compensating),
    (S::Expired, E::LatePaymentAccepted, S::Paid),
    (S::Failed, E::LatePaymentAccepted, S::Paid),
    (S::Expired, E::LateRefundStarted, S::Compensating),
    (S::Failed, E::LateRefundStarted, S::Compensating),
    (S::Cancelled, E::LateRefundStarted, S::Compensating),
    (S::Paid, E::CancelRequested, S::CancelRequested),
    (S::Paid, E::CancelSettled { fully: true }, S::Cancelled),
    (
        S::Paid,
        E::CancelSettled { fully: false },
        S::PartiallyCancelled,
    ),
    (
        S::CancelRequested,
        E::CancelSettled { fully: true },
        S::Cancelled,
    ),
    (
        S::CancelRequested,
        E::CancelSettled { fully: false },
        S::PartiallyCancelled,
    ),
    (
        S::CancelRequested,
        E::CancelRejected {
            partially_cancelled_before: true,
        },
        S::PartiallyCancelled,
    ),
    (
        S::CancelRequested,
        E::CancelRejected {
            partially_cancelled_before: false,
        },
        S::Paid,
    ),
    (
        S::PartiallyCancelled,
        E::CancelRequested,
        S::CancelRequested,
    ),
    (
        S::PartiallyCancelled,
        E::CancelSettled { fully: true },
        S::Cancelled,
    ),
    (
        S::PartiallyCancelled,
        E::CancelSettled { fully: false },
        S::PartiallyCancelled,
    ),
    (S::Compensating, E::CompensationConfirmed, S::Cancelled),
    (S::Compensating, E::CompensationStuck, S::NeedsAttention),
    (S::Expired, E::CompensationStarted, S::Compensating),
    (S::Failed, E::CompensationStarted, S::Compensating),
    (S::NeedsAttention, E::CompensationStarted, S::Compensating),
    (S::NeedsAttention, E::CompensationConfirmed, S::Cancelled),
];

fn expected(from: S, event: E) -> Option<S> {
    ALLOWED
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
}

/// Events that bring a new order to `status` (which also proves every state is reachable).
fn path_to(status: S) -> Vec<E> {
    let paid = vec![E::PaymentRegistered, E::PaymentConfirmed];
    let compensating = vec![E::PaymentRegistered, E::CompensationStarted];
    match status {
        S::Created => vec![],
        S::Pending => vec![E::PaymentRegistered],
        S::Authorized => vec![E::PaymentRegistered, E::ShopperAuthenticated],
        S::Approving => vec![
            E::PaymentRegistered,
            E::ShopperAuthenticated,
            E::ApprovalRequested,
        ],
        S::Paid => paid.clone(),
        S::CancelRequested => [paid.clone(), vec![E::CancelRequested]].concat(),
        S::PartiallyCancelled => [paid.clone(), vec![E::CancelSettled { fully: false }]].concat(),
        S::Cancelled => [paid.clone(), vec![E::CancelSettled { fully: true }]].concat(),
        S::Compensating => compensating.clone(),
        S::Expired => vec![E::PaymentRegistered, E::PaymentExpired],
        S::Failed => vec![E::RegistrationFailed],
        S::NeedsAttention => [compensating, vec![E::CompensationStuck]].concat(),
    }
}

fn order_in(conn: &mut AnyConnection, status: S) -> Order {
    let order = sample_order(conn);
    let mut current = S::Created;
    for event in path_to(status) {
        let outcome =
            orders::transition(conn, &Transition::new(order.id, current, event, "setup")).unwrap();
        let TransitionOutcome::Applied { to, .. } = outcome else {
            panic!("setting up {status}: {event} from {current} gave {outcome:?}");
        };
        current = to;
    }
    assert_eq!(current, status);
    order
}

fn events_named(conn: &mut AnyConnection, order_id: i64, event: E) -> usize {
    orders::timeline(conn, order_id)
        .unwrap()
        .iter()
        .filter(|t| t.event == event.name())
        .count()
}

both_backends! {
    fn every_state_event_pair_follows_the_table(test_db) {
        let db = test_db.connect(2);
        let mut conn = db.get().unwrap();
        let mut checked = 0;
        for from in S::ALL {
            for event in E::ALL {
                let order = order_in(&mut conn, from);
                let before = orders::timeline(&mut conn, order.id).unwrap().len();
                let cause = format!("test: {event} from {from}");
                let outcome = orders::transition(&mut conn, &Transition::new(order.id, from, event, cause.clone())).unwrap();
                let after = orders::find_by_id(&mut conn, order.id).unwrap().unwrap();
                let timeline = orders::timeline(&mut conn, order.id).unwrap();
                match expected(from, event) {
                    Some(to) => {
                        assert!(matches!(outcome, TransitionOutcome::Applied { from: f, to: t, .. } if f == from && t == to),
                                "{event} from {from}: expected {to}, got {outcome:?}");
                        assert_eq!(after.status, to, "{event} from {from}");
                        assert_eq!(timeline.len(), before + 1);
                        let row = timeline.last().unwrap();
                        assert_eq!((row.event.as_str(), row.from_status, row.to_status, row.cause.as_str()),
                                   (event.name(), Some(from), Some(to), cause.as_str()));
                    }
                    None => {
                        assert!(matches!(outcome, TransitionOutcome::NotAllowed(e) if e.from == from && e.event == event),
                                "{event} from {from} must be refused, got {outcome:?}");
                        assert_eq!(after.status, from, "a refused event changed the status");
                        assert_eq!(timeline.len(), before, "a refused event wrote the timeline");
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, S::ALL.len() * E::ALL.len());
        // The pure table agrees with the written-out one on every pair too.
        for from in S::ALL {
            for event in E::ALL {
                assert_eq!(from.next(event).ok(), expected(from, event), "{event} from {from}");
            }
        }
    }

    fn a_stale_expected_status_loses_and_writes_nothing(test_db) {
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let order = order_in(&mut conn, S::Paid);
        // A caller that still believes the order is pending (e.g. a late webhook).
        let outcome = orders::transition(&mut conn, &Transition::new(order.id, S::Pending, E::PaymentFailed, "late")).unwrap();
        assert_eq!(outcome, TransitionOutcome::Lost { current: S::Paid });
        assert_eq!(orders::find_by_id(&mut conn, order.id).unwrap().unwrap().status, S::Paid);
        assert_eq!(events_named(&mut conn, order.id, E::PaymentFailed), 0);
    }

    fn fields_change_with_the_status_in_one_write(test_db) {
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let order = sample_order(&mut conn);
        let patch = OrderPatch {
            pg_cno: Some("PG2026112100001".into()),
            payment_page_url: Some("weixin://wxpay/bizpayurl?pr=abc".into()),
            ..Default::default()
        };
        let t = Transition::new(order.id, S::Created, E::PaymentRegistered, "create-transaction accepted").with_patch(patch);
        assert!(orders::transition(&mut conn, &t).unwrap().is_applied());
        let after = orders::find_by_id(&mut conn, order.id).unwrap().unwrap();
        assert_eq!(after.status, S::Pending);
        assert_eq!(after.pg_cno.as_deref(), Some("PG2026112100001"));
        assert_eq!(after.payment_page_url.as_deref(), Some("weixin://wxpay/bizpayurl?pr=abc"));
        assert!(after.updated_at >= order.updated_at);
        // A later transition writes what its patch names (text and time columns) and leaves
        // every other column as stored (the fixed UPDATE's COALESCE, src/db/fixed.rs).
        let paid_at = kicc_checkout::db::now();
        let paid = Transition::new(order.id, S::Pending, E::PaymentConfirmed, "status check: approved")
            .with_patch(OrderPatch { kicc_status_code: Some("TS01".into()), paid_at: Some(paid_at), ..Default::default() });
        assert!(orders::transition(&mut conn, &paid).unwrap().is_applied());
        let after = orders::find_by_id(&mut conn, order.id).unwrap().unwrap();
        assert_eq!(after.status, S::Paid);
        assert_eq!(after.kicc_status_code.as_deref(), Some("TS01"));
        assert_eq!(after.paid_at, Some(paid_at));
        assert_eq!(after.pg_cno.as_deref(), Some("PG2026112100001"));
        assert_eq!(after.payment_page_url.as_deref(), Some("weixin://wxpay/bizpayurl?pr=abc"));
        assert_eq!(after.expires_at, order.expires_at);
        // The pgCno is unique: a second order cannot take it (and its status does not move).
        let other = sample_order(&mut conn);
        let clash = Transition::new(other.id, S::Created, E::PaymentRegistered, "clash")
            .with_patch(OrderPatch { pg_cno: Some("PG2026112100001".into()), ..Default::default() });
        let err = orders::transition(&mut conn, &clash).unwrap_err();
        assert!(err.is_unique_violation(), "{err}");
        let other = orders::find_by_id(&mut conn, other.id).unwrap().unwrap();
        assert_eq!(other.status, S::Created);
        assert_eq!(orders::timeline(&mut conn, other.id).unwrap().len(), 1, "rolled back with the update");
    }

    fn cancelled_amount_is_compared_and_set_with_the_status(test_db) {
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let order = order_in(&mut conn, S::Paid); // ₩1,000
        let partial = |expected: i64, new: i64, from: S, fully: bool| {
            Transition::new(order.id, from, E::CancelSettled { fully }, "cancellation webhook")
                .with_cancelled_amount(expected, new)
        };
        assert!(orders::transition(&mut conn, &partial(0, 300, S::Paid, false)).unwrap().is_applied());
        // A second settlement computed from the old total (0) loses, though the status matches.
        let stale = orders::transition(&mut conn, &partial(0, 300, S::PartiallyCancelled, false)).unwrap();
        assert_eq!(stale, TransitionOutcome::Lost { current: S::PartiallyCancelled });
        assert!(orders::transition(&mut conn, &partial(300, 1000, S::PartiallyCancelled, true)).unwrap().is_applied());
        let after = orders::find_by_id(&mut conn, order.id).unwrap().unwrap();
        assert_eq!((after.status, after.cancelled.minor(), after.remaining().minor()), (S::Cancelled, 1000, 0));
    }
}

both_backends! {
    fn transitions_compose_inside_one_write_transaction(test_db) {
        use kicc_checkout::db::{DbError, write_transaction};
        let db = test_db.connect(1);
        let mut conn = db.get().unwrap();
        let order = order_in(&mut conn, S::Pending);
        // A failure after the transition rolls the transition back with everything else.
        let failed: Result<(), DbError> = write_transaction(&mut conn, |conn| {
            let t = Transition::new(order.id, S::Pending, E::CompensationStarted, "amount mismatch");
            assert!(orders::transition(conn, &t)?.is_applied());
            orders::add_note(conn, order.id, "note", "written, then rolled back")?;
            Err(DbError::Corrupt("the job row could not be written".into()))
        });
        assert!(failed.is_err());
        assert_eq!(orders::find_by_id(&mut conn, order.id).unwrap().unwrap().status, S::Pending);
        let timeline = orders::timeline(&mut conn, order.id).unwrap();
        assert!(timeline.iter().all(|t| t.event != "compensation_started" && t.event != "note"), "{timeline:?}");
        // The same work, succeeding, commits both.
        write_transaction(&mut conn, |conn| {
            let t = Transition::new(order.id, S::Pending, E::CompensationStarted, "amount mismatch");
            assert!(orders::transition(conn, &t)?.is_applied());
            orders::add_note(conn, order.id, "note", "kept")
        }).unwrap();
        assert_eq!(orders::find_by_id(&mut conn, order.id).unwrap().unwrap().status, S::Compensating);
        assert_eq!(orders::timeline(&mut conn, order.id).unwrap().iter().filter(|t| t.event == "note").count(), 1);
    }
}

/// `threads` threads apply `events[i % events.len()]` from `from` to one order at the same
/// moment; returns the outcomes.
fn race(db: &Db, order: &Order, from: S, events: &[E], threads: usize) -> Vec<TransitionOutcome> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let db = db.clone();
            let barrier = barrier.clone();
            let event = events[i % events.len()];
            let order_id = order.id;
            std::thread::spawn(move || {
                let mut conn = db.get().unwrap();
                barrier.wait();
                orders::transition(
                    &mut conn,
                    &Transition::new(order_id, from, event, format!("racer {i}")),
                )
                .unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

both_backends! {
    fn sixteen_threads_racing_one_transition_exactly_one_wins(test_db) {
        let db = test_db.connect(16);
        let order = order_in(&mut db.get().unwrap(), S::Pending);
        let outcomes = race(&db, &order, S::Pending, &[E::PaymentConfirmed], 16);
        let winners = outcomes.iter().filter(|o| o.is_applied()).count();
        assert_eq!(winners, 1, "{outcomes:?}");
        assert!(outcomes.iter().filter(|o| !o.is_applied()).all(|o| *o == TransitionOutcome::Lost { current: S::Paid }));
        let mut conn = db.get().unwrap();
        assert_eq!(orders::find_by_id(&mut conn, order.id).unwrap().unwrap().status, S::Paid);
        assert_eq!(events_named(&mut conn, order.id, E::PaymentConfirmed), 1, "one timeline row");
    }

    fn sixteen_threads_racing_different_outcomes_exactly_one_wins(test_db) {
        // The returnUrl approval, the webhook, the reconciler's expiry and a failure, all at once.
        let db = test_db.connect(16);
        let order = order_in(&mut db.get().unwrap(), S::Pending);
        let events = [E::PaymentConfirmed, E::PaymentFailed, E::PaymentExpired, E::CompensationStarted];
        let outcomes = race(&db, &order, S::Pending, &events, 16);
        let applied: Vec<_> = outcomes.iter().filter_map(|o| match o {
            TransitionOutcome::Applied { to, .. } => Some(*to),
            _ => None,
        }).collect();
        assert_eq!(applied.len(), 1, "{outcomes:?}");
        let mut conn = db.get().unwrap();
        let status = orders::find_by_id(&mut conn, order.id).unwrap().unwrap().status;
        assert_eq!(status, applied[0]);
        assert!(outcomes.iter().filter(|o| !o.is_applied()).all(|o| *o == TransitionOutcome::Lost { current: status }));
        let transitions = orders::timeline(&mut conn, order.id).unwrap().iter().filter(|t| t.from_status == Some(S::Pending)).count();
        assert_eq!(transitions, 1);
    }
}
