//! The sandbox gateway over real HTTP on loopback, driven with raw JSON bodies (no client
//! library): every endpoint's happy path, KICC's refusal codes, webhook retries, the payment
//! pages, every scenario, the console, mounting under /sandbox and the standalone command.
//! Spec example bodies are the fixtures where they apply.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use kicc_checkout::config::{
    SANDBOX_KICCPAY_AES_IV, SANDBOX_KICCPAY_AES_KEY, SANDBOX_KICCPAY_BIZR_NO,
    SANDBOX_KICCPAY_CHANNEL_ID, SANDBOX_KICCPAY_SECRET_KEY, SANDBOX_KICCPAY_SVC_ID,
    SANDBOX_KICCPAY_TID, SANDBOX_MALL_ID, SANDBOX_SECRET_KEY,
};
use kicc_checkout::kicc::crypto;
use kicc_checkout::sandbox::{SandboxConfig, SandboxServer};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A sandbox of its own, standalone on port 0.
struct Sandbox {
    base: String,
    client: reqwest::Client,
}

impl Sandbox {
    /// Webhook backoff 1 ms, auto-approve off: tests decide when things happen.
    async fn spawn() -> Self {
        Self::spawn_with(&[
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
        ])
        .await
    }

    async fn spawn_with(vars: &[(&'static str, &str)]) -> Self {
        let vars: Vec<(&'static str, String)> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let config = SandboxConfig::from_lookup(|var| {
            Ok(vars.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone()))
        })
        .expect("sandbox configuration");
        let server = SandboxServer::build(config, "127.0.0.1:0".parse().unwrap(), None)
            .expect("sandbox builds");
        let base = server.base_url().to_owned();
        tokio::spawn(server.run_until_stopped());
        Self::at(base)
    }

    /// A sandbox already running at `base` (mounted in an app).
    fn at(base: String) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { base, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The path part of the base: "" standalone, "/sandbox" mounted.
    fn base_path(&self) -> String {
        url::Url::parse(&self.base)
            .unwrap()
            .path()
            .trim_end_matches('/')
            .to_owned()
    }

    async fn post_raw(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a KICC API; the reply must be HTTP 200 JSON.
    async fn post(&self, path: &str, body: &Value) -> Value {
        let response = self.post_raw(path, &body.to_string()).await;
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        response.json().await.expect("JSON reply")
    }

    async fn get_html(&self, url: &str) -> (u16, String) {
        let r = self.client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn trade(&self, id: &str) -> Value {
        let r = self
            .client
            .get(self.url(&format!("/control/trades/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "control/trades/{id}");
        r.json().await.unwrap()
    }

    async fn scenario(&self, order: Option<&str>, name: &str, count: Option<u64>) -> Value {
        let r = self
            .client
            .post(self.url("/control/scenario"))
            .json(&json!({ "shopOrderNo": order, "scenario": name, "count": count }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Creates a native KRW trade (spec 01's example body); returns the reply.
    async fn create(&self, order: &str, notify_url: &str, amount: i64) -> Value {
        let reply = self
            .post(
                "/api/trades/wechatpay",
                &create_body(order, &key(), notify_url, "native", json!(amount)),
            )
            .await;
        assert_eq!(reply["resCd"], "0000", "{reply}");
        reply
    }

    /// Presses Pay (or Cancel) on a WeChat page; returns the page.
    async fn press(&self, pg_cno: &str, action: &str) -> (u16, String) {
        let r = self
            .client
            .post(self.url(&format!("/wechat/pay/{pg_cno}")))
            .form(&[("action", action)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Pays on the WeChat page and reads the return form.
    async fn pay(&self, pg_cno: &str) -> ReturnForm {
        let (status, html) = self.press(pg_cno, "pay").await;
        assert_eq!(status, 200, "{html}");
        ReturnForm::parse(&html)
    }

    async fn approve(&self, order: &str, authorization_id: &str, key: &str) -> Value {
        // Spec 02's request example.
        self.post(
            "/api/v2/trades/approval",
            &json!({
                "mallId": SANDBOX_MALL_ID,
                "shopOrderNo": order,
                "shopTransactionId": key,
                "authorizationId": authorization_id,
                "approvalReqDate": today(),
            }),
        )
        .await
    }

    async fn find(&self, pg_cno: &str) -> Value {
        self.post(
            "/api/trades/wechatpay/find",
            &json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": key(), "pgCno": pg_cno }),
        )
        .await
    }

    /// Created, paid and approved: (pgCno, approval reply, approval key).
    async fn paid_trade(&self, order: &str, notify_url: &str, amount: i64) -> (String, Value) {
        let created = self.create(order, notify_url, amount).await;
        let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
        let form = self.pay(&pg_cno).await;
        let approval = self
            .approve(order, &form.fields["authorizationId"], &key())
            .await;
        assert_eq!(approval["resCd"], "0000", "{approval}");
        (pg_cno, approval)
    }

    /// WeChat revise (spec 06) with a correct msgAuthValue.
    async fn revise(
        &self,
        pg_cno: &str,
        partial: Option<i64>,
        notify_url: Option<&str>,
    ) -> reqwest::Response {
        let key = key();
        let mut body = json!({
            "mallId": SANDBOX_MALL_ID,
            "shopTransactionId": key,
            "pgCno": pg_cno,
            "reviseTypeCode": if partial.is_some() { "32" } else { "40" },
            "cancelReqDate": today(),
            "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[pg_cno, &key]),
        });
        if let Some(amount) = partial {
            body["amountInfo"] = json!({ "currency": "KRW", "totAmount": amount });
        }
        if let Some(url) = notify_url {
            body["notifyUrl"] = json!(url);
        }
        self.post_raw("/api/trades/wechatpay/revise", &body.to_string())
            .await
    }

    async fn revise_json(&self, pg_cno: &str, partial: Option<i64>, notify: Option<&str>) -> Value {
        let r = self.revise(pg_cno, partial, notify).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// A KICC Pay call signed like the client: over the path it calls and the exact body.
    async fn kiccpay(&self, api: &str, body: &str) -> Value {
        let path = format!("{}{api}", self.base_path());
        let (ts, nonce) = (now_ms(), uuid::Uuid::new_v4().to_string());
        let signature = crypto::kiccpay_signature(
            SANDBOX_KICCPAY_SECRET_KEY,
            SANDBOX_KICCPAY_CHANNEL_ID,
            &path,
            &ts,
            &nonce,
            body.as_bytes(),
        );
        self.kiccpay_with(
            api,
            body,
            &[
                ("X-KICC-ChannelId", SANDBOX_KICCPAY_CHANNEL_ID.to_owned()),
                ("X-KICC-Timestamp", ts),
                ("X-KICC-Nonce", nonce),
                ("X-KICC-Authorization", signature),
            ],
        )
        .await
    }

    async fn kiccpay_with(&self, api: &str, body: &str, headers: &[(&str, String)]) -> Value {
        let mut request = self
            .client
            .post(self.url(api))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Opens the KICC Pay window and presses Pay: (pgCno, authorizationId).
    async fn kiccpay_authorize(&self, merc: &str, amount: i64) -> (String, String) {
        let (status, html) = self.get_html(&window_url(self, merc, amount)).await;
        assert_eq!(status, 200, "{html}");
        let action =
            attr(&html, "class=\"sbx-actions\" method=\"post\" action=\"").expect("Pay form");
        let pg_cno = action.rsplit('/').next().unwrap().to_owned();
        let r = self
            .client
            .post(format!("{}{action}", origin(&self.base)))
            .form(&[("action", "pay")])
            .send()
            .await
            .unwrap();
        let form = ReturnForm::parse(&r.text().await.unwrap());
        assert_eq!(form.fields["resCd"], "0000");
        assert_eq!(form.fields["shopOrderNo"], merc);
        (pg_cno, form.fields["authorizationId"].clone())
    }
}

fn window_url(sandbox: &Sandbox, merc: &str, amount: i64) -> String {
    let mut url = url::Url::parse(&sandbox.url("/kiccpay/window")).unwrap();
    url.query_pairs_mut()
        .append_pair("mercTrxNo", merc)
        .append_pair("trxAmt", &amount.to_string())
        .append_pair("goodsName", "Ceramic Coffee Mug")
        .append_pair(
            "returnUrl",
            "http://127.0.0.1:9/checkout/return?via=kiccpay",
        );
    url.to_string()
}

/// Spec 01's request example, with our merchant, a fresh key and these addresses.
fn create_body(order: &str, key: &str, notify_url: &str, trade_type: &str, amount: Value) -> Value {
    json!({
        "mallId": SANDBOX_MALL_ID,
        "shopTransactionId": key,
        "shopOrderNo": order,
        "goodsName": "Sample Product",
        "returnUrl": "http://127.0.0.1:9/checkout/return",
        "tradeType": trade_type,
        "notifyUrl": notify_url,
        "amountInfo": { "currency": "KRW", "totalAmount": amount },
        "customerInfo": {
            "customerId": "User123",
            "customerName": "John Doe",
            "customerMail": "test@email.com",
            "customerContactNo": "01012345678",
            "customerAddr": "Seoul, Korea"
        }
    })
}

/// Spec 03's reqAprv example, with the sandbox terminal and a real tokenKey.
fn kiccpay_approval_body(merc: &str, authorization_id: &str, amount: i64) -> String {
    let key: [u8; 32] = hex::decode(SANDBOX_KICCPAY_AES_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let iv: [u8; 16] = hex::decode(SANDBOX_KICCPAY_AES_IV)
        .unwrap()
        .try_into()
        .unwrap();
    json!({
        "tid": SANDBOX_KICCPAY_TID,
        "svcId": SANDBOX_KICCPAY_SVC_ID,
        "bizrNo": SANDBOX_KICCPAY_BIZR_NO,
        "mercTrxNo": merc,
        "tokenKey": crypto::encrypt_token_key(&key, &iv, authorization_id),
        "alotMonth": "00",
        "trxAmt": amount,
        "vatAmt": amount / 11,
        "svcAmt": 0,
        "taxFreeAmt": 0,
        "tranDt": today(),
        "tranTm": "120000",
        "userData": "User_001"
    })
    .to_string()
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn order_no() -> String {
    format!("ORD{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// KICC's today (KST).
fn today() -> String {
    (chrono::Utc::now() + chrono::TimeDelta::hours(9))
        .format("%Y%m%d")
        .to_string()
}

fn now_ms() -> String {
    chrono::Utc::now().timestamp_millis().to_string()
}

/// `http://host:port` of a URL.
fn origin(base: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .origin()
        .ascii_serialization()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value that follows `prefix` up to the next `"`.
fn attr(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(prefix)? + prefix.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

/// The auto-submitting form that carries the result to the returnUrl.
struct ReturnForm {
    method: String,
    action: String,
    fields: BTreeMap<String, String>,
    html: String,
}

impl ReturnForm {
    fn parse(html: &str) -> Self {
        let start = html
            .find("<form class=\"sbx-return\"")
            .unwrap_or_else(|| panic!("no return form in {html}"));
        let end = html[start..].find("</form>").unwrap() + start;
        let form = &html[start..end];
        let mut fields = BTreeMap::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input type=\"hidden\"") {
            rest = &rest[i + 1..];
            let name = attr(rest, "name=\"").unwrap();
            let value = attr(rest, "value=\"").unwrap();
            fields.insert(name, value);
        }
        Self {
            method: attr(form, "method=\"").unwrap(),
            action: attr(form, "action=\"").unwrap(),
            fields,
            html: html.to_owned(),
        }
    }
}

/// A merchant's webhook endpoint on port 0, recording what it receives.
#[derive(Clone)]
struct Receiver {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    content_type: String,
    body: Value,
}

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Ack {
    Always,
    /// Fails this many times (alternately HTTP 500 and HTTP 200 with resCd 5001), then acks.
    FailFirst(usize),
    Never,
}

impl Receiver {
    async fn spawn(ack: Ack) -> Self {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = (hits.clone(), ack);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.len() >= n || Instant::now() > deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    data: web::Data<(Arc<Mutex<Vec<Hit>>>, Ack)>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pg_cno = body["pgCno"].clone();
    let n = {
        let mut hits = data.0.lock().unwrap();
        hits.push(Hit {
            path: req.path().to_owned(),
            content_type: req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body,
        });
        hits.len()
    };
    let fail = match data.1 {
        Ack::Always => false,
        Ack::FailFirst(k) => n <= k,
        Ack::Never => true,
    };
    match (fail, n % 2) {
        (false, _) => HttpResponse::Ok()
            .json(json!({ "resCd": "0000", "resMsg": "Success", "pgCno": pg_cno })),
        (true, 1) => HttpResponse::InternalServerError().body("down"),
        (true, _) => HttpResponse::Ok()
            .json(json!({ "resCd": "5001", "resMsg": "Internal DB Error", "pgCno": pg_cno })),
    }
}

/// Polls the sandbox's view of a trade until `done` holds (or 30 s pass).
async fn wait_trade(sandbox: &Sandbox, pg_cno: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let trade = sandbox.trade(pg_cno).await;
        if done(&trade) || Instant::now() > deadline {
            return trade;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempts(trade: &Value, webhook: usize) -> Vec<Value> {
    trade["webhooks"][webhook]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Happy paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_native_trade_is_created_paid_approved_notified_and_found() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    let create_key = key();

    let created = sandbox
        .post(
            "/api/trades/wechatpay",
            &create_body(
                &order,
                &create_key,
                &receiver.url("/payment"),
                "native",
                json!(1000),
            ),
        )
        .await;
    assert_eq!(created["resCd"], "0000");
    assert_eq!(created["mallId"], SANDBOX_MALL_ID);
    assert_eq!(created["shopTransactionId"], create_key.as_str());
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    assert!(
        pg_cno.len() == 20 && pg_cno.bytes().all(|b| b.is_ascii_digit()),
        "{pg_cno}"
    );
    assert_eq!(
        created["paymentPageUrl"],
        sandbox.url(&format!("/wechat/scan/{pg_cno}")).as_str()
    );

    // The scan page: merchant, goods, amount, Pay and Cancel; script by src only.
    let (status, page) = sandbox
        .get_html(created["paymentPageUrl"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    for text in [
        SANDBOX_MALL_ID,
        "Sample Product",
        "₩1,000",
        "value=\"pay\"",
        "value=\"cancel\"",
    ] {
        assert!(page.contains(text), "{text} missing from {page}");
    }
    assert!(page.contains(&format!("action=\"/wechat/pay/{pg_cno}\"")));
    assert!(page.contains("<script src=\"/assets/sandbox.js\""));
    assert!(!page.contains("<script>"), "no inline script");

    let unpaid = sandbox.find(&pg_cno).await;
    assert_eq!(unpaid["resCd"], "0000");
    assert_eq!(unpaid["statusCd"], "TS00");
    assert_eq!(unpaid["approvalDate"], "");
    assert_eq!(unpaid["shopOrderNo"], order.as_str());
    assert_eq!(
        unpaid["amountInfo"],
        json!({ "currency": "KRW", "amount": 1000 })
    );

    // Pay: an auto-submitting POST form to the returnUrl, with a button for no-script browsers.
    let form = sandbox.pay(&pg_cno).await;
    assert_eq!(form.method, "post");
    assert_eq!(form.action, "http://127.0.0.1:9/checkout/return");
    assert_eq!(form.fields["resCd"], "0000");
    assert_eq!(form.fields["shopOrderNo"], order);
    assert!(!form.fields["resMsg"].is_empty());
    let authorization_id = form.fields["authorizationId"].clone();
    assert!(!authorization_id.is_empty() && authorization_id.len() <= 60);
    assert!(form.html.contains("data-autosubmit") && form.html.contains("type=\"submit\""));
    assert!(!form.html.contains("<script>"));
    assert!(receiver.hits().is_empty(), "no webhook before the approval");

    let script = sandbox
        .client
        .get(sandbox.url("/assets/sandbox.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(script.text().await.unwrap().contains("data-autosubmit"));
    let css = sandbox
        .client
        .get(sandbox.url("/assets/sandbox.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);

    let approval_key = key();
    let approval = sandbox
        .approve(&order, &authorization_id, &approval_key)
        .await;
    assert_eq!(approval["resCd"], "0000", "{approval}");
    assert_eq!(approval["shopTransactionId"], approval_key.as_str());
    assert_eq!(approval["mallId"], SANDBOX_MALL_ID);
    assert_eq!(approval["shopOrderNo"], order.as_str());
    assert_eq!(approval["pgCno"], pg_cno.as_str());
    assert_eq!(approval["amount"], 1000);
    assert_eq!(approval["statusCode"], "TS03");
    assert_eq!(approval["escrowUsed"], "N");
    let transaction_date = approval["transactionDate"].as_str().unwrap().to_owned();
    assert!(transaction_date.len() == 14 && transaction_date.starts_with(&today()));
    assert!(crypto::verify_msg_auth_value(
        SANDBOX_SECRET_KEY,
        &[&pg_cno, "1000", &transaction_date],
        approval["msgAuthValue"].as_str().unwrap()
    ));
    assert!(
        !approval["paymentInfo"]["approvalNo"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // The approval webhook (spec 04) to the create's notifyUrl.
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/payment");
    assert_eq!(hits[0].content_type, "application/json; charset=utf-8");
    assert_eq!(
        hits[0].body,
        json!({
            "resCd": "0000",
            "resMsg": "Success",
            "mallId": SANDBOX_MALL_ID,
            "shopOrderNo": order,
            "pgCno": pg_cno,
            "approvalDate": transaction_date,
            "amountInfo": { "currency": "KRW", "amount": 1000 }
        })
    );

    let paid = sandbox.find(&pg_cno).await;
    assert_eq!(paid["statusCd"], "TS01");
    assert_eq!(paid["approvalDate"], transaction_date.as_str());

    let trade = wait_trade(&sandbox, &pg_cno, |t| t["webhooks"][0]["state"] == "acked").await;
    assert_eq!(trade["status"], "approved");
    assert_eq!(trade["statusCode"], "TS01");
    assert_eq!(trade["approval"]["by"], "merchant");
    let webhook_attempts = attempts(&trade, 0);
    assert_eq!(webhook_attempts.len(), 1);
    assert_eq!(webhook_attempts[0]["status"], 200);
    assert_eq!(webhook_attempts[0]["acked"], true);
    assert!(
        webhook_attempts[0]["body"]
            .as_str()
            .unwrap()
            .contains("0000")
    );
    let calls: Vec<(&str, &str)> = trade["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["api"].as_str().unwrap(), c["resCd"].as_str().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            ("/api/trades/wechatpay", "0000"),
            ("/api/trades/wechatpay/find", "0000"),
            ("/api/v2/trades/approval", "0000"),
            ("/api/trades/wechatpay/find", "0000"),
        ]
    );
    // The same trade is reachable by its shopOrderNo.
    assert_eq!(sandbox.trade(&order).await["pgCno"], pg_cno.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mweb_trade_pays_on_the_mweb_page_and_cancel_returns_w002() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    let created = sandbox
        .post(
            "/api/trades/wechatpay",
            &create_body(
                &order,
                &key(),
                "http://127.0.0.1:9/hook",
                "mweb",
                json!("2500"),
            ),
        )
        .await;
    assert_eq!(created["resCd"], "0000", "{created}");
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    let page_url = created["paymentPageUrl"].as_str().unwrap();
    assert_eq!(page_url, sandbox.url(&format!("/wechat/mweb/{pg_cno}")));
    let (status, page) = sandbox.get_html(page_url).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("₩2,500") && page.contains("Pay in WeChat"),
        "{page}"
    );
    // The scan page is for native trades only.
    let (status, _) = sandbox
        .get_html(&sandbox.url(&format!("/wechat/scan/{pg_cno}")))
        .await;
    assert_eq!(status, 404);

    let (status, html) = sandbox.press(&pg_cno, "cancel").await;
    assert_eq!(status, 200);
    let cancelled = ReturnForm::parse(&html);
    assert_eq!(cancelled.action, "http://127.0.0.1:9/checkout/return");
    assert_eq!(cancelled.fields["resCd"], "W002");
    assert_eq!(cancelled.fields["shopOrderNo"], order);
    assert!(!cancelled.fields.contains_key("authorizationId"));
    assert_eq!(sandbox.trade(&pg_cno).await["status"], "shopper_cancelled");

    // The shopper may still change their mind and pay.
    let paid = sandbox.pay(&pg_cno).await;
    assert_eq!(paid.fields["resCd"], "0000");
    // Once paid, the page shows the status and no buttons.
    let (_, page) = sandbox.get_html(page_url).await;
    assert!(page.contains("This payment is authorized") && !page.contains("value=\"pay\""));
    let (status, _) = sandbox.press(&pg_cno, "pay").await;
    assert_eq!(status, 409);
    let (status, _) = sandbox.press("00000000000000000000", "pay").await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_bad_fields_with_kiccs_codes() {
    let sandbox = Sandbox::spawn().await;
    type Change = fn(&mut Value);
    let cases: &[(&str, Change, &str)] = &[
        (
            "no shopOrderNo",
            |b| {
                b.as_object_mut().unwrap().remove("shopOrderNo");
            },
            "1001",
        ),
        (
            "no amountInfo",
            |b| {
                b.as_object_mut().unwrap().remove("amountInfo");
            },
            "1001",
        ),
        (
            "another merchant",
            |b| b["mallId"] = json!("T0000000"),
            "2001",
        ),
        (
            "shopOrderNo of 41 bytes",
            |b| b["shopOrderNo"] = json!("O".repeat(41)),
            "1002",
        ),
        (
            "shopTransactionId of 61 bytes",
            |b| b["shopTransactionId"] = json!("k".repeat(61)),
            "1002",
        ),
        (
            "goodsName not English",
            |b| b["goodsName"] = json!("커피 머그"),
            "1002",
        ),
        (
            "goodsName of 101 bytes",
            |b| b["goodsName"] = json!("g".repeat(101)),
            "1002",
        ),
        ("tradeType app", |b| b["tradeType"] = json!("app"), "1001"),
        (
            "currency JPY",
            |b| b["amountInfo"]["currency"] = json!("JPY"),
            "1001",
        ),
        (
            "totalAmount 0",
            |b| b["amountInfo"]["totalAmount"] = json!(0),
            "1001",
        ),
        (
            "totalAmount -5",
            |b| b["amountInfo"]["totalAmount"] = json!("-5"),
            "1001",
        ),
        (
            "totalAmount 12.5",
            |b| b["amountInfo"]["totalAmount"] = json!(12.5),
            "1001",
        ),
        (
            "notifyUrl not a URL",
            |b| b["notifyUrl"] = json!("webhooks/kicc"),
            "1001",
        ),
        (
            "returnUrl of 257 bytes",
            |b| b["returnUrl"] = json!(format!("http://a.kr/{}", "r".repeat(245))),
            "1002",
        ),
        (
            "contact number with dashes",
            |b| b["customerInfo"]["customerContactNo"] = json!("010-1234-5678"),
            "1002",
        ),
        (
            "customerName of 21 bytes",
            |b| b["customerInfo"]["customerName"] = json!("n".repeat(21)),
            "1002",
        ),
        (
            "customerMail of 51 bytes",
            |b| b["customerInfo"]["customerMail"] = json!(format!("{}@x.kr", "m".repeat(46))),
            "1002",
        ),
        (
            "customerAddr of 201 bytes",
            |b| b["customerInfo"]["customerAddr"] = json!("a".repeat(201)),
            "1002",
        ),
        (
            "shopOrderNo with |",
            |b| b["shopOrderNo"] = json!("A|B"),
            "1001",
        ),
    ];
    for (what, change, code) in cases {
        let mut body = create_body(
            &order_no(),
            &key(),
            "http://127.0.0.1:9/hook",
            "native",
            json!(1000),
        );
        change(&mut body);
        let reply = sandbox.post("/api/trades/wechatpay", &body).await;
        assert_eq!(reply["resCd"], *code, "{what}: {reply}");
        assert!(!reply["resMsg"].as_str().unwrap().is_empty());
        assert!(reply.get("pgCno").is_none(), "{what}");
    }

    // At the limits, and an amount sent as a string: accepted.
    let order = "O".repeat(40);
    let mut body = create_body(
        &order,
        &"k".repeat(60),
        "http://127.0.0.1:9/hook",
        "native",
        json!("51004"),
    );
    body["goodsName"] = json!("g".repeat(100));
    let reply = sandbox.post("/api/trades/wechatpay", &body).await;
    assert_eq!(reply["resCd"], "0000", "{reply}");
    assert_eq!(sandbox.trade(&order).await["amount"], 51004);
    // USD in cents.
    let mut usd = create_body(
        &order_no(),
        &key(),
        "http://127.0.0.1:9/hook",
        "native",
        json!(1203),
    );
    usd["amountInfo"]["currency"] = json!("USD");
    let reply = sandbox.post("/api/trades/wechatpay", &usd).await;
    assert_eq!(reply["resCd"], "0000");
    let (_, page) = sandbox
        .get_html(reply["paymentPageUrl"].as_str().unwrap())
        .await;
    assert!(page.contains("$12.03"), "{page}");

    // One trade per shopOrderNo.
    let again = create_body(
        &order,
        &key(),
        "http://127.0.0.1:9/hook",
        "native",
        json!(1000),
    );
    assert_eq!(
        sandbox.post("/api/trades/wechatpay", &again).await["resCd"],
        "3002"
    );

    // Not JSON at all: HTTP 400. JSON that is not an object: KICC's 1001.
    let r = sandbox
        .post_raw("/api/trades/wechatpay", "mallId=T5102001")
        .await;
    assert_eq!(r.status(), 400);
    for body in ["[]", "\"text\"", "null"] {
        let r = sandbox.post_raw("/api/trades/wechatpay", body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["resCd"], "1001", "{body}");
    }
    // Only POST.
    let r = sandbox
        .client
        .get(sandbox.url("/api/trades/wechatpay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_transaction_id_is_good_once_a_day_across_every_api() {
    let sandbox = Sandbox::spawn().await;
    let used = key();
    let order = order_no();
    let first = create_body(
        &order,
        &used,
        "http://127.0.0.1:9/hook",
        "native",
        json!(1000),
    );
    assert_eq!(
        sandbox.post("/api/trades/wechatpay", &first).await["resCd"],
        "0000"
    );
    let pg_cno = sandbox.trade(&order).await["pgCno"]
        .as_str()
        .unwrap()
        .to_owned();

    let second = create_body(
        &order_no(),
        &used,
        "http://127.0.0.1:9/hook",
        "native",
        json!(1000),
    );
    let reply = sandbox.post("/api/trades/wechatpay", &second).await;
    assert_eq!(reply["resCd"], "3001", "{reply}");
    assert_eq!(reply["shopTransactionId"], used.as_str());
    let find = json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": used, "pgCno": pg_cno });
    assert_eq!(
        sandbox.post("/api/trades/wechatpay/find", &find).await["resCd"],
        "3001"
    );
    let form = sandbox.pay(&pg_cno).await;
    let reply = sandbox
        .approve(&order, &form.fields["authorizationId"], &used)
        .await;
    assert_eq!(reply["resCd"], "3001");
    let revise = json!({
        "mallId": SANDBOX_MALL_ID, "shopTransactionId": used, "pgCno": pg_cno,
        "reviseTypeCode": "40", "cancelReqDate": today(),
        "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &used]),
    });
    assert_eq!(
        sandbox.post("/api/trades/revise", &revise).await["resCd"],
        "3001"
    );
    assert_eq!(
        sandbox.post("/api/trades/wechatpay/revise", &revise).await["resCd"],
        "3001"
    );

    // A refused request spends its key too: a retry must use a new one.
    let refused_key = key();
    let mut bad = create_body(
        &order_no(),
        &refused_key,
        "http://127.0.0.1:9/hook",
        "native",
        json!(1000),
    );
    bad["amountInfo"]["currency"] = json!("EUR");
    assert_eq!(
        sandbox.post("/api/trades/wechatpay", &bad).await["resCd"],
        "1001"
    );
    bad["amountInfo"]["currency"] = json!("KRW");
    assert_eq!(
        sandbox.post("/api/trades/wechatpay", &bad).await["resCd"],
        "3001"
    );
}

// ---------------------------------------------------------------------------------------------
// Cancels and status checks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_cancels_accumulate_to_ts02_each_with_its_cancellation_webhook() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    let (pg_cno, _) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    let cancel_hook = receiver.url("/cancel");

    let first = sandbox
        .revise_json(&pg_cno, Some(300), Some(&cancel_hook))
        .await;
    assert_eq!(first["resCd"], "0000", "{first}");
    assert_eq!(first["pgCno"], pg_cno.as_str());
    assert_eq!(first["mallId"], SANDBOX_MALL_ID);
    let first_cancel = first["cancelPgCno"].as_str().unwrap().to_owned();
    assert_eq!(first_cancel.len(), 20);
    assert_eq!(first["cancelDate"].as_str().unwrap().len(), 14);
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS06");

    // More than remains: 4002, nothing changes.
    let too_much = sandbox
        .revise_json(&pg_cno, Some(701), Some(&cancel_hook))
        .await;
    assert_eq!(too_much["resCd"], "4002", "{too_much}");
    assert_eq!(sandbox.trade(&pg_cno).await["remainingAmount"], 700);

    // A msgAuthValue that does not verify: 2002.
    let bad_key = key();
    let bad_mac = json!({
        "mallId": SANDBOX_MALL_ID, "shopTransactionId": bad_key, "pgCno": pg_cno,
        "reviseTypeCode": "40", "cancelReqDate": today(),
        "msgAuthValue": crypto::msg_auth_value("not-the-key", &[&pg_cno, &bad_key]),
        "notifyUrl": cancel_hook,
    });
    assert_eq!(
        sandbox.post("/api/trades/wechatpay/revise", &bad_mac).await["resCd"],
        "2002"
    );
    let signed_for_other_key = json!({
        "mallId": SANDBOX_MALL_ID, "shopTransactionId": key(), "pgCno": pg_cno,
        "reviseTypeCode": "40", "cancelReqDate": today(),
        "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &bad_key]),
    });
    assert_eq!(
        sandbox
            .post("/api/trades/wechatpay/revise", &signed_for_other_key)
            .await["resCd"],
        "2002"
    );
    // A partial cancel needs its amount.
    let partial_key = key();
    let no_amount = json!({
        "mallId": SANDBOX_MALL_ID, "shopTransactionId": partial_key, "pgCno": pg_cno,
        "reviseTypeCode": "32", "cancelReqDate": today(),
        "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &partial_key]),
    });
    assert_eq!(
        sandbox
            .post("/api/trades/wechatpay/revise", &no_amount)
            .await["resCd"],
        "1001"
    );
    // A full cancel (40) takes what remains, without an amount.
    let full = sandbox.revise_json(&pg_cno, None, None).await;
    assert_eq!(full["resCd"], "0000", "{full}");
    let trade = sandbox.trade(&pg_cno).await;
    assert_eq!(trade["statusCode"], "TS02");
    assert_eq!(trade["remainingAmount"], 0);
    assert_eq!(trade["cancelledAmount"], 1000);
    let cancels: Vec<(i64, &str)> = trade["cancels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["amount"].as_i64().unwrap(),
                c["statusCode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(cancels, [(300, "TS06"), (700, "TS02")]);
    // Nothing left: 4003.
    assert_eq!(
        sandbox.revise_json(&pg_cno, None, None).await["resCd"],
        "4003"
    );
    assert_eq!(
        sandbox
            .revise_json("99999999999999999999", None, None)
            .await["resCd"],
        "4001"
    );

    // Only the revise that named a notifyUrl sent a cancellation webhook (spec 05).
    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    let cancel_hits: Vec<&Hit> = hits.iter().filter(|h| h.path == "/cancel").collect();
    assert_eq!(cancel_hits.len(), 1, "{hits:?}");
    let body = &cancel_hits[0].body;
    assert_eq!(body["resCd"], "0000");
    assert_eq!(body["mallId"], SANDBOX_MALL_ID);
    assert_eq!(body["shopOrderNo"], order.as_str());
    assert_eq!(body["pgCno"], pg_cno.as_str());
    assert_eq!(body["cancelPgCno"], first_cancel.as_str());
    assert_eq!(body["cancelDate"], first["cancelDate"]);
    assert_eq!(
        body["amountInfo"],
        json!({ "currency": "KRW", "amount": 300 })
    );

    // Cancellation status check: find with cancelPgCno.
    let find = sandbox
        .post(
            "/api/trades/wechatpay/find",
            &json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": key(),
                     "pgCno": pg_cno, "cancelPgCno": first_cancel }),
        )
        .await;
    assert_eq!(find["resCd"], "0000");
    assert_eq!(find["cancelStatus"], "TS06");
    assert_eq!(
        find["amountInfo"],
        json!({ "currency": "KRW", "totAmount": 300 })
    );
    assert_eq!(find["transactionDate"], first["cancelDate"]);
    let unknown = sandbox
        .post(
            "/api/trades/wechatpay/find",
            &json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": key(),
                     "pgCno": pg_cno, "cancelPgCno": "12345678901234567890" }),
        )
        .await;
    assert_eq!(unknown["resCd"], "4001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partial_cancels_go_ts06_ts06_ts02() {
    let sandbox = Sandbox::spawn().await;
    let (pg_cno, _) = sandbox
        .paid_trade(&order_no(), "http://127.0.0.1:9/hook", 1000)
        .await;
    for (amount, status, remaining) in [(250, "TS06", 750), (250, "TS06", 500), (500, "TS02", 0)] {
        let reply = sandbox.revise_json(&pg_cno, Some(amount), None).await;
        assert_eq!(reply["resCd"], "0000", "{reply}");
        assert_eq!(sandbox.find(&pg_cno).await["statusCd"], status);
        assert_eq!(sandbox.trade(&pg_cno).await["remainingAmount"], remaining);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_revise_and_retrieve_transaction_find_what_a_key_made() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    // Spec 02's example amount.
    let created = sandbox
        .create(&order, "http://127.0.0.1:9/hook", 51004)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    let form = sandbox.pay(&pg_cno).await;
    let approval_key = key();
    let approval = sandbox
        .approve(&order, &form.fields["authorizationId"], &approval_key)
        .await;
    assert_eq!(approval["amount"], 51004);

    let retrieve = |key: &str, date: &str| json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": key, "transactionDate": date });
    let found = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &retrieve(&approval_key, &today()),
        )
        .await;
    assert_eq!(found["resCd"], "0000", "{found}");
    assert_eq!(found["pgCno"], pg_cno.as_str());
    assert_eq!(found["amount"], 51004);
    assert_eq!(found["statusCode"], "TS03");
    assert_eq!(found["transactionDate"], approval["transactionDate"]);
    assert!(
        found.get("msgAuthValue").is_none(),
        "retrieveTransaction has no msgAuthValue"
    );
    // It names an old key and spends none: asking twice works.
    let again = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &retrieve(&approval_key, &today()),
        )
        .await;
    assert_eq!(again["resCd"], "0000");

    // Generic revise (spec 06): partial, then the rest.
    let revise_key = key();
    let partial = sandbox
        .post(
            "/api/trades/revise",
            &json!({
                "mallId": SANDBOX_MALL_ID, "shopTransactionId": revise_key, "pgCno": pg_cno,
                "reviseTypeCode": "32", "cancelReqDate": today(), "amount": "1004",
                "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &revise_key]),
                "reviseMessage": "customer returned one item",
            }),
        )
        .await;
    assert_eq!(partial["resCd"], "0000", "{partial}");
    assert_eq!(partial["oriPgCno"], pg_cno.as_str());
    assert_eq!(partial["shopOrderNo"], order.as_str());
    assert_eq!(partial["statusCode"], "TS06");
    assert_eq!(partial["cancelAmount"], 1004);
    assert_eq!(partial["remainAmount"], 50000);
    let cancel_pg_cno = partial["cancelPgCno"].as_str().unwrap().to_owned();

    let found = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &retrieve(&revise_key, &today()),
        )
        .await;
    assert_eq!(found["resCd"], "0000");
    assert_eq!(found["cancelPgCno"], cancel_pg_cno.as_str());
    assert_eq!(found["statusCode"], "TS06");
    assert_eq!(found["cancelAmount"], 1004);
    assert!(found.get("msgAuthValue").is_none());

    let rest_key = key();
    let rest = sandbox
        .post(
            "/api/trades/revise",
            &json!({
                "mallId": SANDBOX_MALL_ID, "shopTransactionId": rest_key, "pgCno": pg_cno,
                "reviseTypeCode": "40", "cancelReqDate": today(),
                "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &rest_key]),
            }),
        )
        .await;
    assert_eq!(rest["statusCode"], "TS02");
    assert_eq!(rest["cancelAmount"], 50000);
    assert_eq!(rest["remainAmount"], 0);
    // The approval's key now finds the trade fully cancelled.
    let found = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &retrieve(&approval_key, &today()),
        )
        .await;
    assert_eq!(found["statusCode"], "TS02");

    // Unknown key, a key that made no approval or cancel, a date outside yesterday/today.
    let create_key = created["shopTransactionId"].as_str().unwrap();
    for (k, date) in [
        (key(), today()),
        (create_key.to_owned(), today()),
        (approval_key.clone(), "20200101".into()),
    ] {
        let reply = sandbox
            .post("/api/trades/retrieveTransaction", &retrieve(&k, &date))
            .await;
        assert_eq!(reply["resCd"], "4001", "{k} {date}: {reply}");
    }
    let bad_date = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &retrieve(&approval_key, "2026-01-01"),
        )
        .await;
    assert_eq!(bad_date["resCd"], "1001");
}

// ---------------------------------------------------------------------------------------------
// KICC Pay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiccpay_window_approval_and_cancels() {
    let sandbox = Sandbox::spawn().await;
    let merc = order_no();

    // The window: merchant, goods and amount, Pay / Cancel.
    let (status, page) = sandbox.get_html(&window_url(&sandbox, &merc, 10000)).await;
    assert_eq!(status, 200);
    for text in [
        "KICC Pay",
        SANDBOX_MALL_ID,
        "Ceramic Coffee Mug",
        "₩10,000",
        "value=\"pay\"",
    ] {
        assert!(page.contains(text), "{text} missing from {page}");
    }
    let (status, _) = sandbox
        .get_html(
            &sandbox.url("/kiccpay/window?mercTrxNo=X&trxAmt=0&goodsName=G&returnUrl=http://a.kr/"),
        )
        .await;
    assert_eq!(status, 400);

    let (pg_cno, authorization_id) = sandbox.kiccpay_authorize(&merc, 10000).await;
    let body = kiccpay_approval_body(&merc, &authorization_id, 10000);

    // Signature checks (2003): wrong secret, missing headers, a nonce used twice.
    let path = format!("{}/smpy/kiccpay/reqAprv", sandbox.base_path());
    let (ts, nonce) = (now_ms(), uuid::Uuid::new_v4().to_string());
    let forged = crypto::kiccpay_signature(
        "wrong-secret",
        SANDBOX_KICCPAY_CHANNEL_ID,
        &path,
        &ts,
        &nonce,
        body.as_bytes(),
    );
    let headers = |signature: String, nonce: &str| {
        vec![
            ("X-KICC-ChannelId", SANDBOX_KICCPAY_CHANNEL_ID.to_owned()),
            ("X-KICC-Timestamp", ts.clone()),
            ("X-KICC-Nonce", nonce.to_owned()),
            ("X-KICC-Authorization", signature),
        ]
    };
    let reply = sandbox
        .kiccpay_with("/smpy/kiccpay/reqAprv", &body, &headers(forged, &nonce))
        .await;
    assert_eq!(reply["respCd"], "2003", "{reply}");
    assert_eq!(reply["mercTrxNo"], merc.as_str());
    let reply = sandbox
        .kiccpay_with("/smpy/kiccpay/reqAprv", &body, &[])
        .await;
    assert_eq!(reply["respCd"], "2003");
    // Signed over another body (one byte changed): refused.
    let other_body = body.replace("User_001", "User_002");
    let signed_other = crypto::kiccpay_signature(
        SANDBOX_KICCPAY_SECRET_KEY,
        SANDBOX_KICCPAY_CHANNEL_ID,
        &path,
        &ts,
        &nonce,
        other_body.as_bytes(),
    );
    let reply = sandbox
        .kiccpay_with(
            "/smpy/kiccpay/reqAprv",
            &body,
            &headers(signed_other, &nonce),
        )
        .await;
    assert_eq!(reply["respCd"], "2003");

    // Wrong terminal, foreign tokenKey, other amount, unknown mercTrxNo.
    let wrong_tid = body.replace(SANDBOX_KICCPAY_TID, "T000000000");
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &wrong_tid).await["respCd"],
        "2001"
    );
    let foreign = kiccpay_approval_body(&merc, "SBXAUTHsomeoneelse", 10000);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &foreign).await["respCd"],
        "4004"
    );
    let cheaper = kiccpay_approval_body(&merc, &authorization_id, 9999);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &cheaper).await["respCd"],
        "4005"
    );
    let unknown = kiccpay_approval_body("NO-SUCH-ORDER", &authorization_id, 10000);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &unknown).await["respCd"],
        "4001"
    );
    assert_eq!(sandbox.trade(&pg_cno).await["status"], "authorized");

    // Approved (spec 03's response fields).
    let (ts, nonce) = (now_ms(), uuid::Uuid::new_v4().to_string());
    let signature = crypto::kiccpay_signature(
        SANDBOX_KICCPAY_SECRET_KEY,
        SANDBOX_KICCPAY_CHANNEL_ID,
        &path,
        &ts,
        &nonce,
        body.as_bytes(),
    );
    let signed = vec![
        ("X-KICC-ChannelId", SANDBOX_KICCPAY_CHANNEL_ID.to_owned()),
        ("X-KICC-Timestamp", ts.clone()),
        ("X-KICC-Nonce", nonce.clone()),
        ("X-KICC-Authorization", signature),
    ];
    let approved = sandbox
        .kiccpay_with("/smpy/kiccpay/reqAprv", &body, &signed)
        .await;
    assert_eq!(approved["respCd"], "0000", "{approved}");
    for (field, value) in [
        ("tid", SANDBOX_KICCPAY_TID),
        ("svcId", SANDBOX_KICCPAY_SVC_ID),
        ("bizrNo", SANDBOX_KICCPAY_BIZR_NO),
        ("mercTrxNo", merc.as_str()),
    ] {
        assert_eq!(approved[field], value, "{field}");
    }
    for field in [
        "trxDt",
        "trxTm",
        "issFmCd",
        "issFmNm",
        "purchFmCd",
        "purchFmNm",
        "joShopNo",
        "aprvDt",
        "aprvTm",
        "aprvNo",
        "vanTrxNo",
        "cardConfirmNo",
    ] {
        assert!(
            !approved[field].as_str().unwrap_or_default().is_empty(),
            "{field}: {approved}"
        );
    }
    assert_eq!(approved["aprvDt"], today().as_str());
    // The very same signed request again: the nonce is spent.
    let replay = sandbox
        .kiccpay_with("/smpy/kiccpay/reqAprv", &body, &signed)
        .await;
    assert_eq!(replay["respCd"], "2003");
    let trade = sandbox.trade(&merc).await;
    assert_eq!(trade["statusCode"], "TS01");
    assert_eq!(trade["method"], "kiccpay");

    // reqCancel: partial by merchant number, replayed, too much, the rest by VAN number.
    let cancel = |cancel_no: &str, wcc: &str, cnd: &str, amount: i64| {
        json!({
            "tid": SANDBOX_KICCPAY_TID, "svcId": SANDBOX_KICCPAY_SVC_ID, "bizrNo": SANDBOX_KICCPAY_BIZR_NO,
            "mercTrxNo": cancel_no, "wcc": wcc, "cndTrxNo": cnd, "alotMonth": "00",
            "trxAmt": amount, "vatAmt": 0, "svcAmt": 0, "tranDt": today(), "tranTm": "130000",
            "orgAprvDt": approved["aprvDt"], "orgAprvNo": approved["aprvNo"],
        })
        .to_string()
    };
    let first_no = order_no();
    let first = sandbox
        .kiccpay(
            "/smpy/kiccpay/reqCancel",
            &cancel(&first_no, "G", &merc, 4000),
        )
        .await;
    assert_eq!(first["respCd"], "0000", "{first}");
    assert_eq!(first["mercTrxNo"], first_no.as_str());
    assert_eq!(first["cndTrxNo"], merc.as_str());
    assert_eq!(first["trxAmt"], 4000);
    assert!(!first["aprvNo"].as_str().unwrap().is_empty());
    assert_eq!(sandbox.trade(&merc).await["statusCode"], "TS06");
    let replayed = sandbox
        .kiccpay(
            "/smpy/kiccpay/reqCancel",
            &cancel(&first_no, "G", &merc, 4000),
        )
        .await;
    assert_eq!(replayed["respCd"], "0000");
    assert_eq!(replayed["aprvNo"], first["aprvNo"]);
    assert_eq!(
        sandbox.trade(&merc).await["cancelledAmount"],
        4000,
        "not cancelled twice"
    );
    let too_much = sandbox
        .kiccpay(
            "/smpy/kiccpay/reqCancel",
            &cancel(&order_no(), "G", &merc, 6001),
        )
        .await;
    assert_eq!(too_much["respCd"], "4002");
    let van = approved["vanTrxNo"].as_str().unwrap();
    let rest = sandbox
        .kiccpay(
            "/smpy/kiccpay/reqCancel",
            &cancel(&order_no(), "T", van, 6000),
        )
        .await;
    assert_eq!(rest["respCd"], "0000", "{rest}");
    let trade = sandbox.trade(&merc).await;
    assert_eq!(trade["statusCode"], "TS02");
    assert_eq!(trade["remainingAmount"], 0);
    let unknown = sandbox
        .kiccpay(
            "/smpy/kiccpay/reqCancel",
            &cancel(&order_no(), "G", "NO-SUCH", 1),
        )
        .await;
    assert_eq!(unknown["respCd"], "4001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiccpay_net_cancel_voids_an_approval_and_is_harmless_otherwise() {
    let sandbox = Sandbox::spawn().await;
    let merc = order_no();
    let (_, authorization_id) = sandbox.kiccpay_authorize(&merc, 15000).await;
    let body = kiccpay_approval_body(&merc, &authorization_id, 15000);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &body).await["respCd"],
        "0000"
    );
    // reqRtran: the approval's body, byte for byte, under a new signature.
    let voided = sandbox.kiccpay("/smpy/kiccpay/reqRtran", &body).await;
    assert_eq!(voided["respCd"], "0000", "{voided}");
    assert_eq!(voided["tid"], SANDBOX_KICCPAY_TID);
    assert_eq!(voided["mercTrxNo"], merc.as_str());
    let trade = sandbox.trade(&merc).await;
    assert_eq!(trade["statusCode"], "TS12");
    assert_eq!(trade["status"], "net_cancelled");
    assert_eq!(trade["cancels"][0]["amount"], 15000);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqRtran", &body).await["respCd"],
        "0000"
    );
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &body).await["respCd"],
        "4003"
    );

    // Never approved: nothing to undo, 0000, nothing changes.
    let other = order_no();
    let (_, auth) = sandbox.kiccpay_authorize(&other, 3000).await;
    let body = kiccpay_approval_body(&other, &auth, 3000);
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqRtran", &body).await["respCd"],
        "0000"
    );
    assert_eq!(sandbox.trade(&other).await["status"], "authorized");
}

// ---------------------------------------------------------------------------------------------
// Webhook retries (spec 04: up to 15 attempts)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_14_times_then_acked_is_sent_exactly_15_times() {
    // Resends at once: 15 attempts take milliseconds, and a 16th would too.
    let sandbox = Sandbox::spawn_with(&[
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "0"),
        ("SANDBOX_AUTO_APPROVE_MS", "0"),
    ])
    .await;
    let receiver = Receiver::spawn(Ack::FailFirst(14)).await;
    let (pg_cno, _) = sandbox
        .paid_trade(&order_no(), &receiver.url("/payment"), 1000)
        .await;
    let trade = wait_trade(&sandbox, &pg_cno, |t| {
        t["webhooks"][0]["state"] != "sending"
    })
    .await;
    assert_eq!(trade["webhooks"][0]["state"], "acked");
    let tried = attempts(&trade, 0);
    assert_eq!(tried.len(), 15);
    assert_eq!(receiver.hits().len(), 15);
    // The failures were of both kinds, and only the last was an ack.
    assert_eq!(tried[0]["status"], 500);
    assert_eq!(tried[1]["status"], 200);
    assert!(tried[1]["body"].as_str().unwrap().contains("5001"));
    assert!(tried[..14].iter().all(|a| a["acked"] == false));
    assert_eq!(tried[14]["acked"], true);
    let numbers: Vec<i64> = tried
        .iter()
        .map(|a| a["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=15).collect::<Vec<_>>());
    // Every attempt carried the same body.
    let hits = receiver.hits();
    assert!(hits.iter().all(|h| h.body == hits[0].body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_never_acked_is_sent_exactly_15_times_and_no_more() {
    // Resends at once: 15 attempts take milliseconds, and a 16th would too.
    let sandbox = Sandbox::spawn_with(&[
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "0"),
        ("SANDBOX_AUTO_APPROVE_MS", "0"),
    ])
    .await;
    let receiver = Receiver::spawn(Ack::Never).await;
    let (pg_cno, _) = sandbox
        .paid_trade(&order_no(), &receiver.url("/payment"), 1000)
        .await;
    let trade = wait_trade(&sandbox, &pg_cno, |t| {
        t["webhooks"][0]["state"] != "sending"
    })
    .await;
    assert_eq!(trade["webhooks"][0]["state"], "gave_up");
    assert_eq!(attempts(&trade, 0).len(), 15);
    assert_eq!(receiver.hits().len(), 15);
    // With no backoff a 16th would follow within milliseconds: give it a full second.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(receiver.hits().len(), 15);
    assert_eq!(attempts(&sandbox.trade(&pg_cno).await, 0).len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notify_url_is_recorded_as_errors() {
    let sandbox = Sandbox::spawn().await;
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/payment", closed.local_addr().unwrap());
    drop(closed);
    let (pg_cno, _) = sandbox.paid_trade(&order_no(), &url, 1000).await;
    let trade = wait_trade(&sandbox, &pg_cno, |t| attempts(t, 0).len() >= 2).await;
    let first = &attempts(&trade, 0)[0];
    assert_eq!(first["result"], "error");
    assert!(!first["error"].as_str().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Auto-approve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_trade_the_merchant_does_not_approve_is_approved_by_the_sandbox() {
    let sandbox = Sandbox::spawn_with(&[
        ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ("SANDBOX_AUTO_APPROVE_MS", "1000"),
    ])
    .await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    let form = sandbox.pay(&pg_cno).await;
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS00");
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["pgCno"], pg_cno.as_str());
    let trade = sandbox.trade(&pg_cno).await;
    assert_eq!(trade["statusCode"], "TS01");
    assert_eq!(trade["approval"]["by"], "sandbox");
    // The merchant's late approval answers the same approval, and no second webhook goes out.
    let approval = sandbox
        .approve(&order, &form.fields["authorizationId"], &key())
        .await;
    assert_eq!(approval["resCd"], "0000");
    assert_eq!(approval["transactionDate"], hits[0].body["approvalDate"]);

    // A trade the merchant approves in time is approved once.
    let other = order_no();
    let (other_pg, _) = sandbox
        .paid_trade(&other, &receiver.url("/payment"), 2000)
        .await;
    // Well past the auto-approve delay of the second trade.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let other_hits: Vec<Hit> = receiver
        .hits()
        .into_iter()
        .filter(|h| h.body["pgCno"] == other_pg.as_str())
        .collect();
    assert_eq!(other_hits.len(), 1);
    assert_eq!(sandbox.trade(&other_pg).await["approval"]["by"], "merchant");
    assert_eq!(receiver.hits().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_approve_off_a_paid_trade_waits_for_the_merchant() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let created = sandbox
        .create(&order_no(), &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    sandbox.pay(&pg_cno).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS00");
    assert!(receiver.hits().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Scenarios (DESIGN §8)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_decline_answers_5101_and_leaves_the_trade_unpaid() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    // Set before the trade exists: kept for its shopOrderNo.
    let set = sandbox.scenario(Some(&order), "decline", None).await;
    assert_eq!(set["appliesTo"], "order");
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap();
    let form = sandbox.pay(pg_cno).await;
    let reply = sandbox
        .approve(&order, &form.fields["authorizationId"], &key())
        .await;
    assert_eq!(reply["resCd"], "5101", "{reply}");
    assert_eq!(reply["shopOrderNo"], order.as_str());
    assert_eq!(sandbox.find(pg_cno).await["statusCd"], "TS00");
    assert_eq!(sandbox.trade(pg_cno).await["status"], "declined");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_shopper_cancel_turns_pay_into_w002() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    let created = sandbox
        .create(&order, "http://127.0.0.1:9/hook", 1000)
        .await;
    let set = sandbox.scenario(Some(&order), "shopper_cancel", None).await;
    assert_eq!(set["appliesTo"], "trade");
    assert_eq!(set["pgCno"], created["pgCno"]);
    let form = sandbox.pay(created["pgCno"].as_str().unwrap()).await;
    assert_eq!(form.fields["resCd"], "W002");
    assert!(!form.fields.contains_key("authorizationId"));

    // KICC Pay window too.
    let merc = order_no();
    sandbox.scenario(Some(&merc), "shopper_cancel", None).await;
    let (_, html) = sandbox.get_html(&window_url(&sandbox, &merc, 500)).await;
    let action = attr(&html, "class=\"sbx-actions\" method=\"post\" action=\"").unwrap();
    let r = sandbox
        .client
        .post(format!("{}{action}", origin(&sandbox.base)))
        .form(&[("action", "pay")])
        .send()
        .await
        .unwrap();
    let form = ReturnForm::parse(&r.text().await.unwrap());
    assert_eq!(form.fields["resCd"], "W002");
    assert_eq!(form.fields["shopOrderNo"], merc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_approval_late_approves_at_once_and_replies_after_count_ms() {
    let sandbox = Arc::new(Sandbox::spawn().await);
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox
        .scenario(Some(&order), "approval_late", Some(3000))
        .await;
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    let form = sandbox.pay(&pg_cno).await;
    let approval_key = key();
    let started = Instant::now();
    let late = {
        let (sandbox, order, key) = (sandbox.clone(), order.clone(), approval_key.clone());
        let auth = form.fields["authorizationId"].clone();
        tokio::spawn(async move { sandbox.approve(&order, &auth, &key).await })
    };
    // While the reply is held back, the trade is approved and a status check finds it.
    let trade = wait_trade(&sandbox, &pg_cno, |t| t["status"] == "approved").await;
    assert_eq!(trade["status"], "approved");
    assert!(!late.is_finished(), "approved before the reply was sent");
    let found = sandbox
        .post(
            "/api/trades/retrieveTransaction",
            &json!({ "mallId": SANDBOX_MALL_ID, "shopTransactionId": approval_key, "transactionDate": today() }),
        )
        .await;
    assert_eq!(found["resCd"], "0000", "{found}");
    assert_eq!(found["pgCno"], pg_cno.as_str());
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "webhook not held back"
    );
    let reply = late.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply["resCd"], "0000");
    assert_eq!(reply["amount"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_approval_amount_mismatch_approves_another_amount_with_a_valid_mac() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox
        .scenario(Some(&order), "approval_amount_mismatch", None)
        .await;
    let (pg_cno, approval) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    assert_eq!(approval["amount"], 1001);
    assert!(crypto::verify_msg_auth_value(
        SANDBOX_SECRET_KEY,
        &[
            &pg_cno,
            "1001",
            approval["transactionDate"].as_str().unwrap()
        ],
        approval["msgAuthValue"].as_str().unwrap()
    ));
    let hits = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(hits[0].body["amountInfo"]["amount"], 1001);
    assert_eq!(sandbox.find(&pg_cno).await["amountInfo"]["amount"], 1001);
    // A full cancel returns all that was taken.
    let cancel = sandbox.revise_json(&pg_cno, None, None).await;
    assert_eq!(cancel["resCd"], "0000");
    assert_eq!(sandbox.trade(&pg_cno).await["cancelledAmount"], 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_bad_mac_sends_a_msg_auth_value_that_does_not_verify() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    sandbox.scenario(None, "bad_mac", None).await;
    let (pg_cno, approval) = sandbox
        .paid_trade(&order, "http://127.0.0.1:9/hook", 1000)
        .await;
    let mac = approval["msgAuthValue"].as_str().unwrap();
    assert_eq!(mac.len(), 64);
    assert!(mac.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!crypto::verify_msg_auth_value(
        SANDBOX_SECRET_KEY,
        &[
            &pg_cno,
            "1000",
            approval["transactionDate"].as_str().unwrap()
        ],
        mac
    ));
    assert_eq!(
        sandbox.find(&pg_cno).await["statusCd"],
        "TS01",
        "approved all the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_webhook_first_delivers_the_webhook_before_the_return() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox.scenario(Some(&order), "webhook_first", None).await;
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap();
    let form = sandbox.pay(pg_cno).await;
    // By the time the browser is sent back, the webhook has arrived.
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["pgCno"], pg_cno);
    assert_eq!(form.fields["resCd"], "0000");
    assert_eq!(sandbox.find(pg_cno).await["statusCd"], "TS01");
    // The merchant's approval then answers the same approval.
    let approval = sandbox
        .approve(&order, &form.fields["authorizationId"], &key())
        .await;
    assert_eq!(approval["resCd"], "0000");
    assert_eq!(approval["transactionDate"], hits[0].body["approvalDate"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits().len(), 1, "no second webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_return_lost_never_sends_the_browser_back_but_the_webhook_comes() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox.scenario(Some(&order), "return_lost", None).await;
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap();
    let (status, page) = sandbox.press(pg_cno, "pay").await;
    assert_eq!(status, 200);
    assert!(page.contains("Payment complete"), "{page}");
    assert!(!page.contains("data-autosubmit") && !page.contains("/checkout/return"));
    let hits = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(sandbox.find(pg_cno).await["statusCd"], "TS01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_webhook_storm_sends_count_copies_at_once() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox
        .scenario(Some(&order), "webhook_storm", Some(4))
        .await;
    let (pg_cno, _) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    let hits = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    let trade = wait_trade(&sandbox, &pg_cno, |t| {
        t["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "acked")
    })
    .await;
    assert_eq!(trade["webhooks"].as_array().unwrap().len(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_webhook_amount_mismatch_changes_only_the_webhook() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox
        .scenario(Some(&order), "webhook_amount_mismatch", None)
        .await;
    let (pg_cno, approval) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    assert_eq!(approval["amount"], 1000);
    let hits = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(hits[0].body["amountInfo"]["amount"], 1001);
    assert_eq!(sandbox.find(&pg_cno).await["amountInfo"]["amount"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_cancel_reply_lost_cancels_but_drops_the_reply() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    let (pg_cno, _) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    sandbox
        .scenario(Some(&order), "cancel_reply_lost", None)
        .await;
    let lost = sandbox
        .client
        .post(sandbox.url("/api/trades/wechatpay/revise"))
        .body({
            let key = key();
            json!({
                "mallId": SANDBOX_MALL_ID, "shopTransactionId": key, "pgCno": pg_cno,
                "reviseTypeCode": "32", "cancelReqDate": today(),
                "msgAuthValue": crypto::msg_auth_value(SANDBOX_SECRET_KEY, &[&pg_cno, &key]),
                "amountInfo": { "currency": "KRW", "totAmount": 300 },
                "notifyUrl": receiver.url("/cancel"),
            })
            .to_string()
        })
        .send()
        .await;
    let no_reply = match lost {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(no_reply, "the reply must not arrive");
    // The cancel happened, and its webhook came.
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS06");
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert!(
        hits.iter()
            .any(|h| h.path == "/cancel" && h.body["amountInfo"]["amount"] == 300)
    );
    // Count 1: the next cancel replies normally.
    let next = sandbox.revise_json(&pg_cno, Some(200), None).await;
    assert_eq!(next["resCd"], "0000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_cancel_fails_refuses_count_cancels_then_cancels() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    let (pg_cno, _) = sandbox
        .paid_trade(&order, "http://127.0.0.1:9/hook", 1000)
        .await;
    sandbox
        .scenario(Some(&order), "cancel_fails", Some(2))
        .await;
    for _ in 0..2 {
        let reply = sandbox.revise_json(&pg_cno, None, None).await;
        assert_eq!(reply["resCd"], "5102", "{reply}");
        assert_eq!(sandbox.trade(&pg_cno).await["remainingAmount"], 1000);
    }
    assert_eq!(
        sandbox.revise_json(&pg_cno, None, None).await["resCd"],
        "0000"
    );
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_webhook_fails_loses_count_attempts_on_the_way() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    sandbox
        .scenario(Some(&order), "webhook_fails", Some(3))
        .await;
    let (pg_cno, _) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    let trade = wait_trade(&sandbox, &pg_cno, |t| t["webhooks"][0]["state"] == "acked").await;
    let results: Vec<String> = attempts(&trade, 0)
        .iter()
        .map(|a| a["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results, ["dropped", "dropped", "dropped", "http"]);
    assert_eq!(receiver.hits().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_malformed_reply_answers_html_once_and_the_operation_still_happens() {
    let sandbox = Sandbox::spawn().await;
    let order = order_no();
    let created = sandbox
        .create(&order, "http://127.0.0.1:9/hook", 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    let form = sandbox.pay(&pg_cno).await;
    sandbox
        .scenario(Some(&order), "malformed_reply", None)
        .await;
    let body = json!({
        "mallId": SANDBOX_MALL_ID, "shopOrderNo": order, "shopTransactionId": key(),
        "authorizationId": form.fields["authorizationId"], "approvalReqDate": today(),
    });
    let r = sandbox
        .post_raw("/api/v2/trades/approval", &body.to_string())
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    // Approved all the same; the next reply is JSON again.
    assert_eq!(sandbox.find(&pg_cno).await["statusCd"], "TS01");

    // count 2 on KICC Pay.
    let merc = order_no();
    let (_, auth) = sandbox.kiccpay_authorize(&merc, 700).await;
    sandbox
        .scenario(Some(&merc), "malformed_reply", Some(2))
        .await;
    let approval = kiccpay_approval_body(&merc, &auth, 700);
    for _ in 0..2 {
        let path = format!("{}/smpy/kiccpay/reqAprv", sandbox.base_path());
        let (ts, nonce) = (now_ms(), uuid::Uuid::new_v4().to_string());
        let signature = crypto::kiccpay_signature(
            SANDBOX_KICCPAY_SECRET_KEY,
            SANDBOX_KICCPAY_CHANNEL_ID,
            &path,
            &ts,
            &nonce,
            approval.as_bytes(),
        );
        let r = sandbox
            .client
            .post(sandbox.url("/smpy/kiccpay/reqAprv"))
            .header("X-KICC-ChannelId", SANDBOX_KICCPAY_CHANNEL_ID)
            .header("X-KICC-Timestamp", ts)
            .header("X-KICC-Nonce", nonce)
            .header("X-KICC-Authorization", signature)
            .body(approval.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    }
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &approval).await["respCd"],
        "0000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_for_the_next_trade_applies_to_that_trade_only() {
    let sandbox = Sandbox::spawn().await;
    let set = sandbox.scenario(None, "cancel_fails", None).await;
    assert_eq!(set["appliesTo"], "next");
    assert_eq!(set["count"], 1, "default count");
    let first = sandbox
        .create(&order_no(), "http://127.0.0.1:9/hook", 1000)
        .await;
    let second = sandbox
        .create(&order_no(), "http://127.0.0.1:9/hook", 1000)
        .await;
    let scenario_of = |t: &Value| t["scenario"]["scenario"].as_str().unwrap().to_owned();
    assert_eq!(
        scenario_of(&sandbox.trade(first["pgCno"].as_str().unwrap()).await),
        "cancel_fails"
    );
    assert_eq!(
        scenario_of(&sandbox.trade(second["pgCno"].as_str().unwrap()).await),
        "approve"
    );

    // Unknown names and bad counts: HTTP 400 naming the problem.
    for body in [
        json!({ "shopOrderNo": null, "scenario": "approve_later" }),
        json!({ "shopOrderNo": null }),
        json!({ "shopOrderNo": null, "scenario": "cancel_fails", "count": -2 }),
    ] {
        let r = sandbox
            .client
            .post(sandbox.url("/control/scenario"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    let r = sandbox
        .client
        .get(sandbox.url("/control/trades/NO-SUCH-TRADE"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Console

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_trades_calls_and_webhooks_and_its_forms_work() {
    let sandbox = Sandbox::spawn().await;
    let receiver = Receiver::spawn(Ack::Always).await;
    let order = order_no();
    let (pg_cno, _) = sandbox
        .paid_trade(&order, &receiver.url("/payment"), 1000)
        .await;
    wait_trade(&sandbox, &pg_cno, |t| t["webhooks"][0]["state"] == "acked").await;

    let (status, html) = sandbox.get_html(&sandbox.url("/")).await;
    assert_eq!(status, 200);
    for text in [
        pg_cno.as_str(),
        order.as_str(),
        "₩1,000",
        "TS01",
        "/api/v2/trades/approval",
        "acked",
        "HTTP 200",
        "action=\"/control/scenario\"",
        "action=\"/control/webhooks/1/resend\"",
    ] {
        assert!(html.contains(text), "{text} missing from the console");
    }
    for name in [
        "approve",
        "decline",
        "shopper_cancel",
        "approval_late",
        "approval_amount_mismatch",
        "bad_mac",
        "webhook_first",
        "return_lost",
        "webhook_storm",
        "webhook_amount_mismatch",
        "cancel_reply_lost",
        "cancel_fails",
        "webhook_fails",
        "malformed_reply",
    ] {
        assert!(
            html.contains(&format!("<option value=\"{name}\">")),
            "{name}"
        );
    }
    assert!(!html.contains("<script>"));

    // The scenario form: posts a form, comes back to the console.
    let r = sandbox
        .client
        .post(sandbox.url("/control/scenario"))
        .form(&[
            ("shopOrderNo", ""),
            ("scenario", "webhook_storm"),
            ("count", "3"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let (_, html) = sandbox.get_html(&sandbox.url("/")).await;
    assert!(
        html.contains("webhook_storm (count 3)"),
        "next trade's scenario shown"
    );

    // Resend: a new delivery of the same body.
    let r = sandbox
        .client
        .post(sandbox.url("/control/webhooks/1/resend"))
        .form(&[("", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].body, hits[1].body);
    let trade = wait_trade(&sandbox, &pg_cno, |t| t["webhooks"][1]["state"] == "acked").await;
    assert_eq!(trade["webhooks"][1]["resendOf"], 1);
    let r = sandbox
        .client
        .post(sandbox.url("/control/webhooks/2/resend"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["deliveryId"], 3);
    let r = sandbox
        .client
        .post(sandbox.url("/control/webhooks/99/resend"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Mounted in the app, standalone binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sandbox_mode_the_app_serves_the_sandbox_under_slash_sandbox() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let sandbox = Sandbox::at(format!("{}/sandbox", app.address));
    let receiver = Receiver::spawn(Ack::Always).await;

    let (status, console) = sandbox.get_html(&sandbox.url("/")).await;
    assert_eq!(status, 200);
    assert!(
        console.contains("href=\"/sandbox/assets/sandbox.css\""),
        "{console}"
    );

    let order = order_no();
    let created = sandbox
        .create(&order, &receiver.url("/payment"), 1000)
        .await;
    let pg_cno = created["pgCno"].as_str().unwrap().to_owned();
    assert_eq!(
        created["paymentPageUrl"],
        format!("{}/sandbox/wechat/scan/{pg_cno}", app.address).as_str()
    );
    let (status, page) = sandbox
        .get_html(created["paymentPageUrl"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("action=\"/sandbox/wechat/pay/{pg_cno}\"")));
    assert!(page.contains("<script src=\"/sandbox/assets/sandbox.js\""));
    let form = sandbox.pay(&pg_cno).await;
    let approval = sandbox
        .approve(&order, &form.fields["authorizationId"], &key())
        .await;
    assert_eq!(approval["resCd"], "0000");
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);

    // KICC Pay signed over the path the client calls: /sandbox/smpy/kiccpay/reqAprv.
    let merc = order_no();
    let (_, auth) = sandbox.kiccpay_authorize(&merc, 5000).await;
    let body = kiccpay_approval_body(&merc, &auth, 5000);
    let (ts, nonce) = (now_ms(), uuid::Uuid::new_v4().to_string());
    let root_signature = crypto::kiccpay_signature(
        SANDBOX_KICCPAY_SECRET_KEY,
        SANDBOX_KICCPAY_CHANNEL_ID,
        "/smpy/kiccpay/reqAprv",
        &ts,
        &nonce,
        body.as_bytes(),
    );
    let reply = sandbox
        .kiccpay_with(
            "/smpy/kiccpay/reqAprv",
            &body,
            &[
                ("X-KICC-ChannelId", SANDBOX_KICCPAY_CHANNEL_ID.to_owned()),
                ("X-KICC-Timestamp", ts),
                ("X-KICC-Nonce", nonce),
                ("X-KICC-Authorization", root_signature),
            ],
        )
        .await;
    assert_eq!(reply["respCd"], "2003", "signed over the wrong path");
    assert_eq!(
        sandbox.kiccpay("/smpy/kiccpay/reqAprv", &body).await["respCd"],
        "0000"
    );

    // The app's own pages are untouched.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_live_mode_the_app_never_mounts_the_sandbox() {
    let app = TestApp::spawn_with(
        TestDb::sqlite(),
        &[
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "live-secret"),
            ("ADMIN_PASSWORD", "correct horse battery"),
        ],
    )
    .await;
    for path in ["/sandbox/", "/sandbox/assets/sandbox.js"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    let r = app
        .client
        .post(format!("{}/sandbox/api/trades/wechatpay", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

const BIN: &str = env!("CARGO_BIN_EXE_kicc-checkout");

#[test]
fn the_sandbox_command_serves_kiccs_paths_at_the_root() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["sandbox", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The app's live-mode variables do not concern the sandbox.
        .env("KICC_API_BASE", "http://127.0.0.1:1")
        .env("KICC_MALL_ID", "M0000042")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("kicc-checkout sandbox listening on ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("it says where it listens");
    let client = reqwest::blocking::Client::new();
    let body = create_body(
        &order_no(),
        &key(),
        "http://127.0.0.1:9/hook",
        "native",
        json!(1000),
    );
    let mut reply: Value = client
        .post(format!("{base}/api/trades/wechatpay"))
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        reply["resCd"], "2001",
        "its merchant is KICC_MALL_ID: {reply}"
    );
    let mut body = body;
    body["mallId"] = json!("M0000042");
    body["shopTransactionId"] = json!(key());
    reply = client
        .post(format!("{base}/api/trades/wechatpay"))
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(reply["resCd"], "0000", "{reply}");
    assert!(
        reply["paymentPageUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/wechat/scan/"))
    );
    let console = client
        .get(format!("{base}/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(console.contains("M0000042"));
    drop(child);

    // A bad sandbox variable: one line naming it.
    let out = Command::new(BIN)
        .args(["sandbox", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("SANDBOX_WEBHOOK_BACKOFF_MS", "fast")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("kicc-checkout: SANDBOX_WEBHOOK_BACKOFF_MS: "),
        "{}",
        lines[0]
    );
}
