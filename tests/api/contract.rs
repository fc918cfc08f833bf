//! Contract tests: our KICC client against the sandbox gateway, two independent implementations
//! of KICC's protocol, over real HTTP on loopback. Every endpoint, every outcome type, and the
//! webhooks the sandbox sends parsed by our webhook parser.

use std::time::Duration;

use kicc_checkout::db::{Db, gateway_calls};
use kicc_checkout::domain::{Order, TradeType};
use kicc_checkout::kicc::webhook::{Notification, parse_notification};
use kicc_checkout::kicc::{CancelAmount, KiccClient, Outcome, TradeStatus};
use kicc_checkout::sandbox::{SandboxConfig, SandboxServer};
use serde_json::{Value, json};

use crate::helpers::{RawReply, RawServer, hidden_field, kicc_client, sample_order};

/// The sandbox alone on port 0, with millisecond webhook backoff and no auto-approval.
struct Sandbox {
    base: String,
    http: reqwest::Client,
}

impl Sandbox {
    async fn start() -> Self {
        let config = SandboxConfig::from_lookup(|var| {
            Ok(match var {
                "SANDBOX_WEBHOOK_BACKOFF_MS" => Some("1".to_owned()),
                "SANDBOX_AUTO_APPROVE_MS" => Some("0".to_owned()),
                _ => None,
            })
        })
        .unwrap();
        let server = SandboxServer::build(config, "127.0.0.1:0".parse().unwrap(), None).unwrap();
        let base = server.base_url().to_owned();
        tokio::spawn(server.run_until_stopped());
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn scenario(&self, shop_order_no: &str, name: &str, count: u64) {
        let response = self
            .http
            .post(format!("{}/control/scenario", self.base))
            .json(&json!({"shopOrderNo": shop_order_no, "scenario": name, "count": count}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    async fn trade(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/control/trades/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The shopper presses Pay on the WeChat page; returns the authorizationId the sandbox
    /// hands to the returnUrl (read from the auto-submitting form).
    async fn shopper_pays(&self, pg_cno: &str) -> String {
        let html = self
            .http
            .post(format!("{}/wechat/pay/{pg_cno}", self.base))
            .form(&[("action", "pay")])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        hidden_field(&html, "authorizationId")
            .unwrap_or_else(|| panic!("no authorizationId in {html}"))
    }
}

impl Sandbox {
    /// The shopper opens the KICC Pay window (as the app sends them there) and presses Pay;
    /// returns the authorizationId handed to the returnUrl.
    async fn kiccpay_window_pays(&self, order: &Order) -> String {
        let mut url = url::Url::parse(&format!("{}/kiccpay/window", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("mercTrxNo", order.shop_order_no.as_str())
            .append_pair("trxAmt", &order.amount.minor().to_string())
            .append_pair("goodsName", &order.goods_name)
            .append_pair("returnUrl", "http://shop.test/return");
        let page = self
            .http
            .get(url.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let action = page
            .split("action=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a Pay form");
        let back = self
            .http
            .post(url.join(action).unwrap())
            .form(&[("action", "pay")])
            .send()
            .await
            .unwrap();
        let back = back.text().await.unwrap();
        hidden_field(&back, "authorizationId")
            .unwrap_or_else(|| panic!("no authorizationId in {back}"))
    }
}

/// A WeChat trade registered and paid by the shopper: (order, pgCno, authorizationId).
async fn paid_on_page(
    client: &KiccClient,
    sandbox: &Sandbox,
    db: &Db,
    notify: &str,
) -> (Order, String, String) {
    let order = sample_order(&mut db.get().unwrap());
    let created = client
        .create_wechat_trade(&order, TradeType::Native, "http://shop.test/return", notify)
        .await
        .unwrap();
    let registered = created.outcome.accepted().expect("create accepted").clone();
    assert!(
        registered.payment_page_url.starts_with(&sandbox.base),
        "{}",
        registered.payment_page_url
    );
    let auth = sandbox.shopper_pays(&registered.pg_cno).await;
    (order, registered.pg_cno, auth)
}

/// A webhook receiver that acks everything and keeps the bodies.
fn acking_receiver() -> RawServer {
    RawServer::start(|req| {
        let pg_cno = req.json().get("pgCno").cloned().unwrap_or(Value::Null);
        RawReply::Json(json!({"resCd": "0000", "resMsg": "Success", "pgCno": pg_cno}))
    })
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = probe() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting");
}

both_backends! {
    async fn wechat_pay_approve_find_cancel_and_retrieve(test_db) {
        let db = test_db.connect(4);
        let sandbox = Sandbox::start().await;
        let receiver = acking_receiver();
        let notify = format!("{}/notify", receiver.base);
        let client = kicc_client(&db, &sandbox.base, Duration::from_secs(5));
        let (order, pg_cno, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;

        let approval = client.approve(&order, &auth).await.unwrap();
        let approved = approval.outcome.accepted().expect("approved").clone();
        assert_eq!((approved.pg_cno.as_str(), approved.amount), (pg_cno.as_str(), order.amount.minor()));
        assert_eq!(approved.status, Some(TradeStatus::Approved));

        let found = client.wechat_find(Some(order.id), &pg_cno).await.unwrap();
        let status = found.outcome.accepted().unwrap();
        assert_eq!((status.status.clone(), status.amount), (TradeStatus::Approved, Some(1000)));
        assert_eq!(status.currency.as_deref(), Some("KRW"));

        // The approval can be looked up by its own key and date (spec 06).
        let retrieved = client.retrieve_transaction(Some(order.id), &approval.shop_transaction_id, &approval.request_date).await.unwrap();
        let retrieved = retrieved.outcome.accepted().unwrap();
        assert_eq!(retrieved.pg_cno.as_deref(), Some(pg_cno.as_str()));
        assert_eq!(retrieved.amount, Some(1000));

        // Partial, then the rest: TS06 then TS02, each confirmed by the cancellation status check.
        let partial = client.wechat_revise(&order, &pg_cno, CancelAmount::Partial(300), &notify, None).await.unwrap();
        let cancel_pg_cno = partial.outcome.accepted().unwrap().cancel_pg_cno.clone().expect("cancelPgCno");
        let check = client.wechat_find_cancel(Some(order.id), &pg_cno, &cancel_pg_cno).await.unwrap();
        let check = check.outcome.accepted().unwrap();
        assert_eq!((check.status.clone(), check.amount), (TradeStatus::PartiallyCancelled, Some(300)));
        // More than remains is refused (4002), and changes nothing.
        let too_much = client.wechat_revise(&order, &pg_cno, CancelAmount::Partial(701), &notify, None).await.unwrap();
        assert!(matches!(&too_much.outcome, Outcome::Declined { code, .. } if code == "4002"), "{:?}", too_much.outcome);
        let rest = client.revise(&order, &pg_cno, CancelAmount::Full, None).await.unwrap();
        assert!(rest.outcome.accepted().is_some(), "{:?}", rest.outcome);
        let after = client.wechat_find(Some(order.id), &pg_cno).await.unwrap();
        assert_eq!(after.outcome.accepted().unwrap().status, TradeStatus::Cancelled);
        let trade = sandbox.trade(&pg_cno).await;
        assert_eq!((trade["cancelledAmount"].as_i64(), trade["statusCode"].as_str()), (Some(1000), Some("TS02")));

        // The webhooks the sandbox sent parse with our parser: one approval, one cancellation
        // (the generic revise sends none, spec 06).
        let bodies = wait_for(|| {
            let requests = receiver.requests();
            (requests.len() >= 2).then_some(requests)
        }).await;
        let parsed: Vec<Notification> = bodies.iter().map(|r| parse_notification(&r.body).unwrap()).collect();
        assert!(matches!(&parsed[0], Notification::Payment(p) if p.pg_cno == pg_cno && p.amount == Some(1000) && p.currency.as_deref() == Some("KRW")), "{parsed:?}");
        assert!(matches!(&parsed[1], Notification::Cancel(c) if c.cancel_pg_cno == cancel_pg_cno && c.amount == Some(300)), "{parsed:?}");

        // Every call is in gateway_calls, accepted or declined as it was.
        let rows = gateway_calls::all(&mut db.get().unwrap()).unwrap();
        let outcomes: Vec<_> = rows.iter().map(|r| (r.api.as_str(), r.outcome.as_deref().unwrap())).collect();
        assert_eq!(outcomes, [
            ("wechat_create", "accepted"), ("approval_v2", "accepted"), ("wechat_find", "accepted"),
            ("retrieve_transaction", "accepted"), ("wechat_revise", "accepted"), ("wechat_find_cancel", "accepted"),
            ("wechat_revise", "declined"), ("revise", "accepted"), ("wechat_find", "accepted"),
        ]);
    }

    async fn every_failure_outcome_against_the_sandbox(test_db) {
        let db = test_db.connect(4);
        let sandbox = Sandbox::start().await;
        let receiver = acking_receiver();
        let notify = format!("{}/notify", receiver.base);
        let client = kicc_client(&db, &sandbox.base, Duration::from_millis(700));

        // Declined.
        let (order, _, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;
        sandbox.scenario(order.shop_order_no.as_str(), "decline", 1).await;
        let declined = client.approve(&order, &auth).await.unwrap();
        assert!(matches!(&declined.outcome, Outcome::Declined { code, .. } if code == "5101"), "{:?}", declined.outcome);

        // Timeout: approved, but the reply comes after the client gave up; the status check by
        // the approval's key finds the approval (spec 02's rule needs exactly this).
        let (order, pg_cno, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;
        sandbox.scenario(order.shop_order_no.as_str(), "approval_late", 2500).await;
        let late = client.approve(&order, &auth).await.unwrap();
        assert_eq!(late.outcome, Outcome::Timeout);
        let retrieved = client.retrieve_transaction(Some(order.id), &late.shop_transaction_id, &late.request_date).await.unwrap();
        let retrieved = retrieved.outcome.accepted().expect("the status check answers").clone();
        assert_eq!((retrieved.pg_cno.as_deref(), retrieved.status), (Some(pg_cno.as_str()), Some(TradeStatus::Approved)));

        // Malformed reply.
        let (order, pg_cno, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;
        sandbox.scenario(order.shop_order_no.as_str(), "malformed_reply", 1).await;
        let malformed = client.wechat_find(Some(order.id), &pg_cno).await.unwrap();
        assert!(matches!(malformed.outcome, Outcome::Malformed(_)), "{:?}", malformed.outcome);

        // Integrity failure: the approval's msgAuthValue does not verify.
        sandbox.scenario(order.shop_order_no.as_str(), "bad_mac", 1).await;
        let bad_mac = client.approve(&order, &auth).await.unwrap();
        assert!(matches!(&bad_mac.outcome, Outcome::IntegrityFailure { pg_cno: Some(p), .. } if *p == pg_cno), "{:?}", bad_mac.outcome);

        // Amount mismatch: accepted (the MAC is valid) with the amount KICC approved; the saga
        // compares it with the order.
        let (order, _, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;
        sandbox.scenario(order.shop_order_no.as_str(), "approval_amount_mismatch", 1).await;
        let mismatch = client.approve(&order, &auth).await.unwrap();
        assert_eq!(mismatch.outcome.accepted().unwrap().amount, order.amount.minor() + 1);

        // Transport error: the cancel is made but the connection drops instead of the reply.
        let (order, pg_cno, auth) = paid_on_page(&client, &sandbox, &db, &notify).await;
        assert!(client.approve(&order, &auth).await.unwrap().outcome.accepted().is_some());
        sandbox.scenario(order.shop_order_no.as_str(), "cancel_reply_lost", 1).await;
        let dropped = client.wechat_revise(&order, &pg_cno, CancelAmount::Full, &notify, None).await.unwrap();
        assert!(matches!(dropped.outcome, Outcome::Transport(_)), "{:?}", dropped.outcome);
        // The payment status check tells what happened (spec 06: check before deciding).
        let status = client.wechat_find(Some(order.id), &pg_cno).await.unwrap();
        assert_eq!(status.outcome.accepted().unwrap().status, TradeStatus::Cancelled);

        // A client with the wrong secret: the sandbox refuses its msgAuthValue (2002).
        let mut config = kicc_checkout::config::Config::from_lookup(|var| Ok((var == "KICC_SECRET_KEY").then(|| "wrong-secret".to_owned()))).unwrap();
        config.gateway_timeout = Duration::from_secs(5);
        let settings = kicc_checkout::kicc::ClientSettings::from_config(&config, &sandbox.base);
        let wrong = KiccClient::new(settings, db.clone()).unwrap();
        let refused = wrong.wechat_revise(&order, &mismatch.outcome.accepted().unwrap().pg_cno, CancelAmount::Full, &notify, None).await.unwrap();
        assert!(matches!(&refused.outcome, Outcome::Declined { code, .. } if code == "2002"), "{:?}", refused.outcome);

        let labels: Vec<_> = gateway_calls::all(&mut db.get().unwrap()).unwrap().into_iter().filter_map(|r| r.outcome).collect();
        for label in ["declined", "timeout", "malformed", "integrity_failure", "transport_error", "accepted"] {
            assert!(labels.iter().any(|l| l == label), "{label} missing from {labels:?}");
        }
    }

    async fn kiccpay_window_approve_cancel_and_net_cancel(test_db) {
        let db = test_db.connect(4);
        let sandbox = Sandbox::start().await;
        let client = kicc_client(&db, &sandbox.base, Duration::from_secs(5));
        let order = sample_order(&mut db.get().unwrap());
        let auth = sandbox.kiccpay_window_pays(&order).await;
        let (approval, _) = client.kiccpay_approve(&order, &auth).await.unwrap();
        let approved = approval.outcome.accepted().expect("approved").clone();
        let approval_no = approved.approval_no.clone().expect("aprvNo");
        let approval_date = approved.approval_date.clone().expect("aprvDt");
        let cancel = client.kiccpay_cancel(&order, &approval_date, &approval_no, 1000).await.unwrap();
        assert!(cancel.outcome.accepted().is_some(), "{:?}", cancel.outcome);
        assert_eq!(sandbox.trade(order.shop_order_no.as_str()).await["cancelledAmount"].as_i64(), Some(1000));

        // Net-cancel after an approval whose reply was lost: the same data, and the approval is
        // undone.
        let order = sample_order(&mut db.get().unwrap());
        let auth = sandbox.kiccpay_window_pays(&order).await;
        sandbox.scenario(order.shop_order_no.as_str(), "malformed_reply", 1).await;
        let (lost, tran) = client.kiccpay_approve(&order, &auth).await.unwrap();
        assert!(lost.outcome.is_unknown(), "{:?}", lost.outcome);
        let net = client.kiccpay_net_cancel(&order, &auth, &tran).await.unwrap();
        assert!(net.outcome.accepted().is_some(), "{:?}", net.outcome);
        let trade = sandbox.trade(order.shop_order_no.as_str()).await;
        assert_eq!(trade["statusCode"].as_str(), Some("TS12"), "{trade}");

        // A client with the wrong KICC Pay secret: its signature is refused (2003).
        let config = kicc_checkout::config::Config::from_lookup(|var| Ok((var == "KICCPAY_SECRET_KEY").then(|| "wrong".to_owned()))).unwrap();
        let wrong = KiccClient::new(kicc_checkout::kicc::ClientSettings::from_config(&config, &sandbox.base), db.clone()).unwrap();
        let order = sample_order(&mut db.get().unwrap());
        let auth = sandbox.kiccpay_window_pays(&order).await;
        let (refused, _) = wrong.kiccpay_approve(&order, &auth).await.unwrap();
        assert!(matches!(&refused.outcome, Outcome::Declined { code, .. } if code == "2003"), "{:?}", refused.outcome);
    }
}
