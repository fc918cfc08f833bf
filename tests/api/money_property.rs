//! The one rule of money as a property (README, "How a payment is kept safe"): for one order,
//! any interleaving of the shopper's payment and return, forged returns and notifications,
//! status checks, reconciler passes, expiry and merchant cancels — with the mounted sandbox
//! deciding whether money was taken — ends with money taken at KICC ⇔ the order `paid` or
//! `partially_cancelled`, and what KICC still holds equal to what the order says remains.
//!
//! `PROPTEST_CASES` sets the case count (default 8 per backend); `benches/fuzz.sh money SECONDS`
//! runs it long (docs/RELIABILITY.md).

use std::time::Duration;

use diesel::RunQueryDsl;
use kicc_checkout::db::orders;
use kicc_checkout::domain::{Order, OrderStatus, ShopOrderNo};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, approval_notification, cancel_notification};

/// What can happen to an order, in any order.
#[derive(Debug, Clone)]
enum Step {
    /// The shopper pays and the browser comes back with the authorizationId.
    PayAndReturn,
    /// The shopper pays and never comes back: the sandbox approves by itself and notifies.
    PayAndLeave,
    /// The shopper presses Cancel; the browser returns `W002`.
    ShopperCancels,
    /// A stranger posts a failure return for the order.
    ForgedFailureReturn,
    /// A return with `0000` and no authorizationId (a replay, or a stranger).
    BareReturn,
    /// An approval notification with the order's own values, whether or not KICC approved.
    ForgedApproval,
    /// A failure notification for the order.
    ForgedFailureNotification,
    /// A cancellation notification for a cancel KICC never made.
    ForgedCancel,
    /// The merchant's re-check with KICC.
    StatusCheck,
    ReconcilerPass,
    /// The order's life ends; a reconciler pass.
    Expire,
    /// The merchant cancels all, or a part.
    MerchantCancel {
        partial: bool,
    },
    /// Time passes (follow-ups, the sandbox's own approval and notifications).
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::PayAndReturn),
        3 => Just(Step::PayAndLeave),
        1 => Just(Step::ShopperCancels),
        1 => Just(Step::ForgedFailureReturn),
        1 => Just(Step::BareReturn),
        1 => Just(Step::ForgedApproval),
        1 => Just(Step::ForgedFailureNotification),
        1 => Just(Step::ForgedCancel),
        1 => Just(Step::StatusCheck),
        2 => Just(Step::ReconcilerPass),
        2 => Just(Step::Expire),
        2 => any::<bool>().prop_map(|partial| Step::MerchantCancel { partial }),
        2 => (0u64..400).prop_map(|ms| Step::Wait { ms }),
    ]
}

/// The sandbox approves a paid trade by itself after this long (WeChat's asynchronous model).
const AUTO_APPROVE_MS: u64 = 150;

fn vars(late: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("SANDBOX_AUTO_APPROVE_MS", "150"),
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ("COMPENSATION_BACKOFF_MS", "50"),
        ("RECONCILE_INTERVAL_SECS", "3600"),
        ("LATE_PAYMENTS", late),
    ]
}

struct World<'a> {
    app: &'a TestApp,
    no: String,
    pg_cno: String,
    stranger: reqwest::Client,
}

impl World<'_> {
    fn order(&self) -> Order {
        orders::find_by_shop_order_no(
            &mut self.app.db.get().unwrap(),
            &ShopOrderNo::parse(&self.no).unwrap(),
        )
        .unwrap()
        .unwrap()
    }

    fn story(&self) -> String {
        let order = self.order();
        orders::timeline(&mut self.app.db.get().unwrap(), order.id)
            .unwrap()
            .into_iter()
            .map(|t| format!("  {} -> {:?}: {}", t.event, t.to_status, t.cause))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn kicc(&self) -> Value {
        self.app
            .get(&format!("/sandbox/control/trades/{}", self.pg_cno))
            .await
            .json()
            .await
            .unwrap()
    }

    async fn notify(&self, route: &str, body: Value) {
        let _ = self
            .stranger
            .post(format!("{}{route}", self.app.address))
            .json(&body)
            .send()
            .await;
    }

    async fn ret(&self, fields: &[(&str, &str)]) {
        let _ = self
            .stranger
            .post(format!("{}/checkout/return", self.app.address))
            .form(fields)
            .send()
            .await;
    }

    async fn run(&self, step: &Step) {
        let no = ShopOrderNo::parse(&self.no).unwrap();
        let checkout = &self.app.state.checkout;
        match step {
            Step::PayAndReturn | Step::PayAndLeave | Step::ShopperCancels => {
                let action = if matches!(step, Step::ShopperCancels) {
                    "cancel"
                } else {
                    "pay"
                };
                let html = self
                    .app
                    .client
                    .post(format!(
                        "{}/sandbox/wechat/pay/{}",
                        self.app.address, self.pg_cno
                    ))
                    .form(&[("action", action)])
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if matches!(step, Step::PayAndLeave) {
                    return;
                }
                let field = |name| crate::helpers::hidden_field(&html, name).unwrap_or_default();
                let (res_cd, auth) = (field("resCd"), field("authorizationId"));
                if res_cd.is_empty() {
                    return; // not payable any more: the page says so
                }
                let mut fields = vec![("resCd", res_cd.as_str()), ("shopOrderNo", &self.no)];
                if !auth.is_empty() {
                    fields.push(("authorizationId", &auth));
                }
                self.ret(&fields).await;
            }
            Step::ForgedFailureReturn => {
                self.ret(&[("resCd", "W002"), ("shopOrderNo", &self.no)])
                    .await
            }
            Step::BareReturn => {
                self.ret(&[("resCd", "0000"), ("shopOrderNo", &self.no)])
                    .await
            }
            Step::ForgedApproval | Step::ForgedFailureNotification => {
                let amount = self.order().amount.minor();
                let mut body = approval_notification(&self.no, &self.pg_cno, amount, "KRW");
                if matches!(step, Step::ForgedFailureNotification) {
                    body["resCd"] = json!("W002");
                }
                self.notify("/webhooks/kicc/payment", body).await;
            }
            Step::ForgedCancel => {
                let forged = format!("FORGED{}", uuid::Uuid::new_v4().simple());
                let body = cancel_notification(&self.no, &self.pg_cno, &forged, 1000, "KRW");
                self.notify("/webhooks/kicc/cancel", body).await;
            }
            Step::StatusCheck => {
                let _ = checkout.merchant_recheck(&no).await;
            }
            Step::ReconcilerPass => {
                self.app.reconcile().await;
            }
            Step::Expire => {
                let id = self.order().id;
                diesel::sql_query(format!(
                    "UPDATE orders SET expires_at = created_at WHERE id = {id}"
                ))
                .execute(&mut *self.app.db.get().unwrap())
                .unwrap();
                self.app.reconcile().await;
            }
            Step::MerchantCancel { partial } => {
                let amount = partial.then(|| self.order().remaining().minor() / 2);
                let _ = checkout
                    .merchant_cancel(&no, amount.filter(|a| *a > 0))
                    .await;
            }
            Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }

    /// Lets everything in flight finish: the sandbox's own approvals and notifications, the
    /// follow-ups after acks, and reconciler passes until the order rests.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(AUTO_APPROVE_MS * 3)).await;
        for _ in 0..60 {
            self.app.reconcile().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let resting = !matches!(
                self.order().status,
                OrderStatus::Authorized
                    | OrderStatus::Approving
                    | OrderStatus::Compensating
                    | OrderStatus::CancelRequested
            );
            if resting {
                // Once more, for a notification still on its way.
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.app.reconcile().await;
                if self.order().status == OrderStatus::Compensating {
                    continue;
                }
                return;
            }
        }
    }
}

fn check(
    runtime: &tokio::runtime::Runtime,
    apps: &[TestApp],
    case: (usize, Vec<Step>),
) -> Result<(), TestCaseError> {
    let (which, steps) = case;
    let app = &apps[which % apps.len()];
    runtime.block_on(async {
        let (no, pg_cno) = app.tote_order().await;
        let world = World {
            app,
            no,
            pg_cno,
            stranger: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        for step in &steps {
            world.run(step).await;
        }
        world.settle().await;
        let order = world.order();
        let trade = world.kicc().await;
        let held = trade["remainingAmount"].as_i64().unwrap_or_default();
        let holds = matches!(
            order.status,
            OrderStatus::Paid | OrderStatus::PartiallyCancelled
        );
        let context = format!(
            "steps {steps:?}\nKICC: {trade}\norder {} is {}, remaining {}\n{}",
            world.no,
            order.status,
            order.remaining(),
            world.story()
        );
        prop_assert_eq!(held > 0, holds, "money and order disagree:\n{}", context);
        if holds {
            prop_assert_eq!(
                held,
                order.remaining().minor(),
                "amounts disagree:\n{}",
                context
            );
        }
        Ok(())
    })
}

fn money_and_order_agree(test_db: TestDb) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let apps = runtime.block_on(async {
        let accept = TestApp::spawn_with(test_db, &vars("accept")).await;
        let refund = TestApp::spawn_beside(&accept, &vars("refund")).await;
        vec![accept, refund]
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        // Each case is a real order over real HTTP: shrinking replays many of them.
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    });
    let strategy = (0usize..2, prop::collection::vec(step(), 1..8));
    let result = runner.run(&strategy, |case| check(&runtime, &apps, case));
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("money_and_order_agree: {cases} cases passed");
}

both_backends! {
    fn any_interleaving_ends_with_money_and_order_agreeing(test_db) {
        money_and_order_agree(test_db);
    }
}
