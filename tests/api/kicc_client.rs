//! The KICC client against a gateway that misbehaves on purpose, over real HTTP: every call is
//! recorded before it is sent; timeouts, transport errors and malformed replies are typed;
//! secrets, tokenKey and authorizationId reach neither the table nor the log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kicc_checkout::db::{Db, gateway_calls};
use kicc_checkout::domain::Order;
use kicc_checkout::kicc::{Api, CancelAmount, KiccClient, Outcome};
use serde_json::json;

use crate::helpers::{RawReply, RawServer, kicc_client, sample_order};

/// Calls every API once; returns the outcome labels in order.
async fn call_every_api(client: &KiccClient, order: &Order) -> Vec<(Api, &'static str)> {
    use kicc_checkout::domain::TradeType;
    let mut labels = Vec::new();
    let c = client
        .create_wechat_trade(
            order,
            TradeType::Native,
            "http://shop/return",
            "http://shop/notify",
        )
        .await
        .unwrap();
    labels.push((Api::WechatCreate, c.outcome.label()));
    let c = client.wechat_find(Some(order.id), "PG1").await.unwrap();
    labels.push((Api::WechatFind, c.outcome.label()));
    let c = client
        .wechat_find_cancel(Some(order.id), "PG1", "CPG1")
        .await
        .unwrap();
    labels.push((Api::WechatFindCancel, c.outcome.label()));
    let c = client
        .wechat_revise(
            order,
            "PG1",
            CancelAmount::Partial(300),
            "http://shop/notify",
            None,
        )
        .await
        .unwrap();
    labels.push((Api::WechatRevise, c.outcome.label()));
    let c = client.approve(order, "AUTH-ID-123").await.unwrap();
    labels.push((Api::ApprovalV2, c.outcome.label()));
    let c = client
        .revise(order, "PG1", CancelAmount::Full, None)
        .await
        .unwrap();
    labels.push((Api::Revise, c.outcome.label()));
    let c = client
        .retrieve_transaction(Some(order.id), &c.shop_transaction_id, &c.request_date)
        .await
        .unwrap();
    labels.push((Api::RetrieveTransaction, c.outcome.label()));
    let (c, tran) = client.kiccpay_approve(order, "AUTH-ID-123").await.unwrap();
    labels.push((Api::KiccPayApprove, c.outcome.label()));
    let c = client
        .kiccpay_net_cancel(order, "AUTH-ID-123", &tran)
        .await
        .unwrap();
    labels.push((Api::KiccPayNetCancel, c.outcome.label()));
    let c = client
        .kiccpay_cancel(order, "20261121", "12345678", 1000)
        .await
        .unwrap();
    labels.push((Api::KiccPayCancel, c.outcome.label()));
    labels
}

fn api_for_path(path: &str) -> &'static str {
    Api::ALL
        .iter()
        .find(|a| a.path() == path)
        .map(|a| a.as_str())
        .unwrap_or("unknown")
}

both_backends! {
    async fn every_call_is_recorded_before_it_is_sent(test_db) {
        let db = test_db.connect(4);
        let order = sample_order(&mut db.get().unwrap());
        // At the moment each request arrives, the gateway looks into our database: exactly one
        // call must be there without an answer, and it must be this one.
        let checker_db: Db = db.clone();
        let recorded_first = Arc::new(Mutex::new(Vec::new()));
        let log = recorded_first.clone();
        let server = RawServer::start(move |req| {
            let mut conn = checker_db.get().unwrap();
            let open: Vec<_> = gateway_calls::all(&mut conn).unwrap().into_iter().filter(|c| c.completed_at.is_none()).collect();
            let expected_api = match (api_for_path(&req.path), req.json().get("cancelPgCno")) {
                ("wechat_find", Some(_)) => "wechat_find_cancel",
                (api, _) => api,
            };
            let ok = open.len() == 1
                && open[0].api == expected_api
                && (req.header("X-KICC-Nonce").is_none()
                    || req.header("X-KICC-Nonce") == Some(open[0].shop_transaction_id.as_str()));
            log.lock().unwrap().push((req.path.clone(), ok));
            RawReply::Json(json!({"resCd": "9999", "respCd": "9999", "resMsg": "declined by test", "respMsg": "declined by test"}))
        });
        let client = kicc_client(&db, &server.base, Duration::from_secs(5));
        let labels = call_every_api(&client, &order).await;
        assert!(labels.iter().all(|(_, l)| *l == "declined"), "{labels:?}");
        let checks = recorded_first.lock().unwrap().clone();
        assert_eq!(checks.len(), Api::ALL.len());
        assert!(checks.iter().all(|(_, ok)| *ok), "a call reached the gateway before its row: {checks:?}");

        let rows = gateway_calls::all(&mut db.get().unwrap()).unwrap();
        assert_eq!(rows.len(), Api::ALL.len());
        for (row, (api, _)) in rows.iter().zip(&labels) {
            assert_eq!(row.api, api.as_str());
            assert_eq!(row.order_id, Some(order.id));
            assert_eq!(row.outcome.as_deref(), Some("declined"));
            assert_eq!(row.res_cd.as_deref(), Some("9999"));
            assert_eq!(row.http_status, Some(200));
            assert!(row.completed_at.is_some() && row.latency_ms.is_some());
            assert_eq!(row.request_date.len(), 8);
            assert!(row.response_body.as_deref().unwrap().contains("declined by test"));
        }
        // Every key is fresh.
        let mut keys: Vec<_> = rows.iter().map(|r| r.shop_transaction_id.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), rows.len());
    }

    async fn unknown_endings_are_typed_and_recorded(test_db) {
        let db = test_db.connect(4);
        let order = sample_order(&mut db.get().unwrap());
        let server = RawServer::start(|req| match req.path.as_str() {
            "/api/trades/wechatpay" => RawReply::Late(Duration::from_secs(3), json!({"resCd": "0000"})),
            "/api/trades/wechatpay/find" => RawReply::Status(500, "upstream exploded".into()),
            "/api/v2/trades/approval" => RawReply::Text("<html>maintenance</html>".into()),
            "/api/trades/wechatpay/revise" => RawReply::Json(json!({"resMsg": "no code"})),
            "/smpy/kiccpay/reqAprv" => RawReply::Json(json!({"respCd": "0000", "respMsg": "ok", "mercTrxNo": "x", "trxAmt": "12x"})),
            _ => RawReply::Json(json!({"resCd": "0000"})),
        });
        let client = kicc_client(&db, &server.base, Duration::from_millis(400));
        use kicc_checkout::domain::TradeType;
        let timeout = client.create_wechat_trade(&order, TradeType::Mweb, "http://r", "http://n").await.unwrap();
        assert_eq!(timeout.outcome, Outcome::Timeout);
        assert!(timeout.outcome.is_unknown());
        let http_500 = client.wechat_find(Some(order.id), "PG1").await.unwrap();
        assert_eq!(http_500.outcome, Outcome::Transport("HTTP 500".into()));
        let html = client.approve(&order, "AUTH").await.unwrap();
        assert!(matches!(html.outcome, Outcome::Malformed(_)), "{:?}", html.outcome);
        let no_code = client.wechat_revise(&order, "PG1", CancelAmount::Full, "http://n", None).await.unwrap();
        assert!(matches!(no_code.outcome, Outcome::Malformed(_)), "{:?}", no_code.outcome);
        let (bad_amount, _) = client.kiccpay_approve(&order, "AUTH").await.unwrap();
        assert!(matches!(bad_amount.outcome, Outcome::Malformed(_)), "{:?}", bad_amount.outcome);
        // The generic revise needs nothing but resCd 0000 to be accepted.
        let missing = client.revise(&order, "PG1", CancelAmount::Full, None).await.unwrap();
        assert!(matches!(missing.outcome, Outcome::Accepted(_)), "generic revise needs only resCd: {:?}", missing.outcome);

        // Nobody listening: a transport error, recorded too.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let dead = kicc_client(&db, &dead_base, Duration::from_millis(400));
        let refused = dead.wechat_find(Some(order.id), "PG1").await.unwrap();
        assert!(matches!(refused.outcome, Outcome::Transport(_)), "{:?}", refused.outcome);

        let rows = gateway_calls::all(&mut db.get().unwrap()).unwrap();
        let outcomes: Vec<_> = rows.iter().map(|r| r.outcome.clone().unwrap()).collect();
        assert_eq!(outcomes, ["timeout", "transport_error", "malformed", "malformed", "malformed", "accepted", "transport_error"]);
        assert_eq!(rows[0].http_status, None);
        assert_eq!(rows[1].http_status, Some(500));
        assert!(rows[2].response_body.as_deref().unwrap().starts_with("[not JSON, 24 bytes] <html>"));
    }

    async fn integrity_failure_when_msg_auth_value_is_wrong(test_db) {
        let db = test_db.connect(2);
        let order = sample_order(&mut db.get().unwrap());
        let secret = kicc_checkout::config::SANDBOX_SECRET_KEY;
        let good = kicc_checkout::kicc::crypto::msg_auth_value(secret, &["PG7", "1000", "20261121120000"]);
        let forged = kicc_checkout::kicc::crypto::msg_auth_value("not-the-key", &["PG7", "1000", "20261121120000"]);
        let macs = Arc::new(Mutex::new(vec![forged, good]));
        let server = RawServer::start(move |_| {
            let mac = macs.lock().unwrap().remove(0);
            RawReply::Json(json!({"resCd": "0000", "pgCno": "PG7", "amount": "1000",
                "transactionDate": "20261121120000", "statusCode": "TS03", "msgAuthValue": mac}))
        });
        let client = kicc_client(&db, &server.base, Duration::from_secs(5));
        let forged = client.approve(&order, "AUTH").await.unwrap();
        assert!(matches!(&forged.outcome, Outcome::IntegrityFailure { pg_cno: Some(p), .. } if p == "PG7"), "{:?}", forged.outcome);
        let good = client.approve(&order, "AUTH").await.unwrap();
        let approval = good.outcome.accepted().expect("a valid MAC is accepted");
        assert_eq!((approval.amount, approval.pg_cno.as_str()), (1000, "PG7"));
        let rows = gateway_calls::all(&mut db.get().unwrap()).unwrap();
        assert_eq!(rows[0].outcome.as_deref(), Some("integrity_failure"));
        assert_eq!(rows[1].outcome.as_deref(), Some("accepted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_token_key_and_authorization_id_reach_neither_table_nor_log() {
    let capture = crate::helpers::capture_logs();

    let test_db = crate::helpers::TestDb::sqlite();
    let db = test_db.connect(2);
    let order = sample_order(&mut db.get().unwrap());
    let server = RawServer::start(|_| {
        RawReply::Json(json!({"resCd": "0000", "respCd": "0000", "pgCno": "PG9",
        "amount": 1000, "transactionDate": "20261121120000", "msgAuthValue": "00", "cancelPgCno": "C9"}))
    });
    let client = kicc_client(&db, &server.base, Duration::from_secs(5));
    let authorization_id = "AUTHZ-7f3c9a21-SECRET-ID";
    client.approve(&order, authorization_id).await.unwrap();
    let (_, tran) = client
        .kiccpay_approve(&order, authorization_id)
        .await
        .unwrap();
    client
        .kiccpay_net_cancel(&order, authorization_id, &tran)
        .await
        .unwrap();
    client
        .wechat_revise(&order, "PG9", CancelAmount::Full, "http://n", None)
        .await
        .unwrap();

    // The gateway did receive them (so the test can fail).
    let config = kicc_checkout::config::Config::from_lookup(|_| Ok(None)).unwrap();
    let token_key = kicc_checkout::kicc::crypto::encrypt_token_key(
        secrecy::ExposeSecret::expose_secret(&config.kiccpay.aes_key),
        secrecy::ExposeSecret::expose_secret(&config.kiccpay.aes_iv),
        authorization_id,
    );
    let received: String = server
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(received.contains(authorization_id) && received.contains(&token_key));

    let rows = gateway_calls::all(&mut db.get().unwrap()).unwrap();
    assert_eq!(rows.len(), 4);
    let stored = format!("{rows:?}");
    let logged = capture.text();
    assert!(
        logged.contains("kicc approval_v2"),
        "the client logs its calls: {logged}"
    );
    for secret in [
        authorization_id,
        token_key.as_str(),
        kicc_checkout::config::SANDBOX_SECRET_KEY,
        kicc_checkout::config::SANDBOX_KICCPAY_SECRET_KEY,
        kicc_checkout::config::SANDBOX_KICCPAY_AES_KEY,
        kicc_checkout::config::SANDBOX_KICCPAY_AES_IV,
    ] {
        assert!(!stored.contains(secret), "{secret} stored in gateway_calls");
        assert!(!logged.contains(secret), "{secret} in the log");
    }
    assert!(stored.contains("[redacted]"));
}
