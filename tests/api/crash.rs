//! The app killed (SIGKILL) after its approval request reached KICC and before it could record
//! the answer: on restart the reconciler finds the unanswered call and settles the order — never
//! a PG approval with no paid order.

use std::time::Duration;

use kicc_checkout::db::{DatabaseUrl, Db, PoolOptions, gateway_calls, orders};
use kicc_checkout::sandbox::{SandboxConfig, SandboxServer};
use serde_json::{Value, json};

use crate::cli::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_approval_is_settled_on_restart() {
    // KICC (the sandbox) lives in this process and outlives the app.
    let config = SandboxConfig::from_lookup(|var| {
        Ok(match var {
            "SANDBOX_AUTO_APPROVE_MS" => Some("0".to_owned()),
            "SANDBOX_WEBHOOK_BACKOFF_MS" => Some("1".to_owned()),
            _ => None,
        })
    })
    .unwrap();
    let sandbox = SandboxServer::build(config, "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let kicc = sandbox.base_url().to_owned();
    tokio::spawn(sandbox.run_until_stopped());

    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("shop.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let env = |timeout: &'static str| {
        vec![
            ("DATABASE_URL", db_url.clone()),
            ("BIND_ADDR", bind.clone()),
            ("KICC_API_BASE", kicc.clone()),
            (
                "KICC_MALL_ID",
                kicc_checkout::config::SANDBOX_MALL_ID.to_owned(),
            ),
            (
                "KICC_SECRET_KEY",
                kicc_checkout::config::SANDBOX_SECRET_KEY.to_owned(),
            ),
            ("ADMIN_PASSWORD", "correct horse".to_owned()),
            // Only the reconciler may settle this order: KICC's notifications are refused.
            ("WEBHOOK_ALLOWED_IPS", "61.33.205.151".to_owned()),
            ("RECONCILE_INTERVAL_SECS", "1".to_owned()),
            ("KICC_TIMEOUT_SECS", timeout.to_owned()),
        ]
    };
    let as_refs = |vars: &[(&'static str, String)]| {
        vars.iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>()
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let first_env = as_refs(&env("30"));
    let first_vars: Vec<(&str, &str)> = first_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = start(dir.path(), &first_vars);
    let created: Value = http
        .post(format!("{}/api/orders", app.base))
        .json(&json!({"items": [{"sku": "CERAMIC-MUG", "quantity": 1}], "currency": "KRW", "payMethod": "wechat",
                      "customer": {"name": "Kim", "email": "kim@example.com", "phone": "01012345678", "address": "Seoul"}}))
        .send().await.unwrap().json().await.unwrap();
    let no = created["shopOrderNo"].as_str().unwrap().to_owned();
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    // KICC approves at once but answers only after a minute.
    http.post(format!("{kicc}/control/scenario"))
        .json(&json!({"shopOrderNo": no, "scenario": "approval_late", "count": 60000}))
        .send()
        .await
        .unwrap();
    let page = http
        .post(format!("{kicc}/wechat/pay/{pg_cno}"))
        .form(&[("action", "pay")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let auth = crate::helpers::hidden_field(&page, "authorizationId").expect("an authorizationId");
    let returning = {
        let (http, url) = (http.clone(), format!("{}/checkout/return", app.base));
        let form = [
            ("resCd", "0000".to_owned()),
            ("shopOrderNo", no.clone()),
            ("authorizationId", auth),
        ];
        tokio::spawn(async move { http.post(url).form(&form).send().await })
    };
    // The approval reached KICC…
    let trade = |http: reqwest::Client| {
        let url = format!("{kicc}/control/trades/{pg_cno}");
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    for _ in 0..100 {
        if trade(http.clone()).await["statusCode"] == "TS01" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trade(http.clone()).await["statusCode"], "TS01");
    // …and the app dies before the answer.
    drop(app);
    assert!(
        returning.await.unwrap().is_err(),
        "the shopper's request died with the app"
    );

    // What the dead app left: the approval sent and recorded, no answer, the order approving.
    {
        let url = DatabaseUrl::parse(&db_url).unwrap();
        let db = Db::connect(&url, &PoolOptions::default()).unwrap();
        let mut conn = db.get().unwrap();
        let calls = gateway_calls::all(&mut conn).unwrap();
        let approval = calls
            .iter()
            .find(|c| c.api == "approval_v2")
            .expect("the approval was recorded before sending");
        assert!(approval.completed_at.is_none());
        let order = orders::find_by_shop_order_no(
            &mut conn,
            &kicc_checkout::domain::ShopOrderNo::parse(&no).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(order.status.as_str(), "approving");
    }

    // Restart: the reconciler asks KICC with the persisted key and date.
    let second_env = as_refs(&env("1"));
    let second_vars: Vec<(&str, &str)> = second_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = start(dir.path(), &second_vars);
    let mut status = String::new();
    for _ in 0..300 {
        let order: Value = http
            .get(format!("{}/api/orders/{no}", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = order["status"].as_str().unwrap().to_owned();
        if status == "paid" || status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kicc_status = trade(http.clone()).await["statusCode"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        (status == "paid" && kicc_status == "TS01")
            || (status == "cancelled" && kicc_status == "TS02"),
        "order {status}, KICC {kicc_status}"
    );
    // The amounts match, so it is settled paid.
    assert_eq!(status, "paid");
}
