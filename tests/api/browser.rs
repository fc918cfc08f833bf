//! Real-browser end-to-end tests: headless Chromium driven over WebDriver (chromedriver) against
//! the app and its sandbox on loopback. A shopper pays by QR with the sandbox's scan page in a
//! second tab while the first tab turns "paid" by itself; a phone goes through the redirect; a
//! merchant signs in, finds the order and cancels part of it.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! tests are skipped with a message — unless `CI` is set, then they fail.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use kicc_checkout::db::orders;
use kicc_checkout::domain::ShopOrderNo;
use serde_json::json;

use crate::helpers::{TestApp, TestDb};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Chromium under chromedriver, headless, with the flags this machine needs (no background
/// networking: the network is closed).
async fn browser(user_agent: Option<&str>) -> Option<Browser> {
    let available = std::path::Path::new("/usr/bin/chromedriver").exists()
        && std::path::Path::new("/usr/bin/chromium").exists();
    if !available {
        if std::env::var_os("CI").is_some() {
            panic!("chromium and chromium-driver are not installed and CI is set");
        }
        eprintln!("SKIPPED: chromium / chromium-driver not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    if let Some(ua) = user_agent {
        args.push(format!("--user-agent={ua}"));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": args}),
    );
    let client = ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    Some(Browser { client, driver })
}

async fn app() -> TestApp {
    TestApp::spawn_with(
        TestDb::sqlite(),
        &[
            ("ADMIN_PASSWORD", crate::admin::PASSWORD),
            ("SANDBOX_AUTO_APPROVE_MS", "0"),
            ("SANDBOX_WEBHOOK_BACKOFF_MS", "1"),
        ],
    )
    .await
}

/// Waits until `probe` (a page check) holds, reloading nothing: the page must change by itself.
async fn eventually(client: &Client, what: &str, mut probe: impl AsyncFnMut(&Client) -> bool) {
    for _ in 0..150 {
        if probe(client).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = client
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    panic!("never: {what} (at {url})");
}

/// Clicks an element that is on the page now.
async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// Clicks an element once it appears.
async fn click_when_shown(c: &Client, at: Locator<'_>) {
    c.wait()
        .for_element(at)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Types into an element that is on the page now.
async fn type_into(c: &Client, at: Locator<'_>, text: &str) {
    c.find(at).await.unwrap().send_keys(text).await.unwrap();
}

/// Types into an element once it appears.
async fn type_when_shown(c: &Client, at: Locator<'_>, text: &str) {
    c.wait()
        .for_element(at)
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Types into an element once it appears, and checks that the element holds the text; if it
/// does not (the keys went to a page that was still being replaced), types it again. For
/// fields whose value a test relies on, such as an amount.
async fn type_until_held(c: &Client, at: Locator<'_>, text: &str) {
    eventually(c, &format!("the field holds {text:?}"), async |c| {
        let Ok(field) = c.find(at).await else {
            return false;
        };
        if field.prop("value").await.ok().flatten().as_deref() == Some(text) {
            return true;
        }
        let _ = field.clear().await;
        let _ = field.send_keys(text).await;
        field.prop("value").await.ok().flatten().as_deref() == Some(text)
    })
    .await;
}

async fn heading(client: &Client) -> String {
    match client.find(Locator::Css("h1")).await {
        Ok(h) => h.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn add_to_cart(c: &Client, base: &str, sku: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    click(c, Locator::Css(&format!("a[href='/products/{sku}']"))).await;
    click_when_shown(c, Locator::Css(".add-to-cart button")).await;
    c.wait()
        .for_element(Locator::Css("table.cart"))
        .await
        .unwrap();
}

async fn check_out(c: &Client, base: &str) {
    c.goto(&format!("{base}/cart")).await.unwrap();
    click(c, Locator::Css("a.button[href^='/checkout']")).await;
    for (id, value) in [
        ("name", "Kim Minsu"),
        ("email", "minsu@example.kr"),
        ("phone", "010-1234-5678"),
        ("address", "Seoul"),
    ] {
        type_when_shown(c, Locator::Id(id), value).await;
    }
    click(c, Locator::Css(".checkout-form button[type=submit]")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_pays_by_qr_and_the_first_tab_turns_paid_by_itself() {
    let app = app().await;
    let Some(b) = browser(None).await else { return };
    let c = &b.client;
    add_to_cart(c, &app.address, "CERAMIC-MUG").await;
    add_to_cart(c, &app.address, "CANVAS-TOTE").await;
    let cart = c.source().await.unwrap();
    assert!(cart.contains("₩36,000"), "two products in the cart");
    check_out(c, &app.address).await;
    // Desktop: the QR page.
    c.wait().for_element(Locator::Css("#qr svg")).await.unwrap();
    assert_eq!(heading(c).await, "Scan to pay with WeChat Pay");
    let url = c.current_url().await.unwrap();
    let no = url.path().trim_start_matches("/orders/").to_owned();
    let scan = {
        let mut conn = app.db.get().unwrap();
        orders::find_by_shop_order_no(&mut conn, &ShopOrderNo::parse(&no).unwrap())
            .unwrap()
            .unwrap()
            .payment_page_url
            .unwrap()
    };
    let first = c.window().await.unwrap();
    // The phone: the scan page in a second tab; Pay sends it back to the shop.
    let tab = c.new_window(true).await.unwrap();
    c.switch_to_window(tab.handle).await.unwrap();
    c.goto(&scan).await.unwrap();
    click_when_shown(c, Locator::Css("button[value=pay]")).await;
    eventually(c, "the second tab lands on the receipt", async |c| {
        heading(c).await.contains("payment is complete")
    })
    .await;
    // The first tab moved on by itself (it polls the order's status).
    c.switch_to_window(first).await.unwrap();
    eventually(c, "the QR tab shows the payment complete", async |c| {
        heading(c).await.contains("payment is complete")
    })
    .await;
    assert!(c.source().await.unwrap().contains("Approval number"));
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_goes_through_the_redirect() {
    let app = app().await;
    let Some(b) = browser(Some(IPHONE)).await else {
        return;
    };
    let c = &b.client;
    add_to_cart(c, &app.address, "STICKER-PACK").await;
    check_out(c, &app.address).await;
    // Mobile: a 303 to WeChat's (the sandbox's) page, then back to the receipt.
    c.wait()
        .for_element(Locator::Css("button[value=pay]"))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .contains("/sandbox/wechat/mweb/")
    );
    click(c, Locator::Css("button[value=pay]")).await;
    eventually(c, "the phone lands on the receipt", async |c| {
        heading(c).await.contains("payment is complete")
    })
    .await;
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_finds_an_order_and_cancels_part_of_it() {
    let app = app().await;
    let (no, pg_cno) = app.paid_order().await;
    let Some(b) = browser(None).await else { return };
    let c = &b.client;
    c.goto(&format!("{}/admin", app.address)).await.unwrap();
    // Sent to sign in first.
    type_when_shown(c, Locator::Id("user"), "admin").await;
    type_into(c, Locator::Id("password"), crate::admin::PASSWORD).await;
    click(c, Locator::Css("form button[type=submit]")).await;
    eventually(c, "the dashboard", async |c| {
        heading(c).await == "Dashboard"
    })
    .await;
    c.goto(&format!("{}/admin/orders", app.address))
        .await
        .unwrap();
    type_when_shown(c, Locator::Css("input[name=q]"), &pg_cno).await;
    click(c, Locator::Css(".filters button[type=submit]")).await;
    // The unfiltered list shows the same link: wait for the search's page, or the click may land
    // on the old page as it goes away.
    eventually(c, "the search results", async |c| {
        c.current_url()
            .await
            .is_ok_and(|u| u.query().is_some_and(|q| q.contains("q=")))
    })
    .await;
    click_when_shown(c, Locator::Css(&format!("a[href='/admin/orders/{no}']"))).await;
    // A full cancel if the amount were lost: the field must hold it before the click.
    type_until_held(c, Locator::Id("amount"), "5,000").await;
    click(c, Locator::Css(".cancel-form button")).await;
    let flash = c
        .wait()
        .for_element(Locator::Id("flash"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flash.starts_with("Cancel sent"), "{flash}");
    // KICC's cancellation notification settles it; the page shows it on the next visit.
    eventually(c, "the order shows partially_cancelled", async |c| {
        c.refresh().await.unwrap();
        match c.find(Locator::Id("status")).await {
            Ok(s) => s.text().await.unwrap_or_default() == "partially_cancelled",
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(
        c.find(Locator::Id("cancelled"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "₩5,000"
    );
    b.client.clone().close().await.unwrap();
}

/// A reviewer opens /review, presses Run, and watches the table fill in to all PASS without
/// reloading; the full report with its evidence opens from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_page_runs_to_all_pass() {
    let app = app().await;
    let Some(b) = browser(None).await else { return };
    let c = &b.client;
    c.goto(&format!("{}/", app.address)).await.unwrap();
    click(c, Locator::Css("nav a[href='/review']")).await;
    c.wait()
        .for_element(Locator::Id("run-review"))
        .await
        .unwrap();
    assert_eq!(heading(c).await, "KICC integration review");
    let total = kicc_checkout::review::SCENARIOS.len();
    let waiting = c
        .find_all(Locator::Css("tr[id^='row-'] .tag.waiting"))
        .await
        .unwrap();
    assert_eq!(waiting.len(), total, "every scenario listed, none run");
    click(c, Locator::Id("run-review")).await;
    // Rows turn PASS as scenarios finish (the page is not reloaded: the script fills them in).
    let mut saw_partial = false;
    for _ in 0..600 {
        let passed = c
            .find_all(Locator::Css("tr[id^='row-'] .tag.pass"))
            .await
            .unwrap()
            .len();
        let failed = c
            .find_all(Locator::Css("tr[id^='row-'] .tag.fail"))
            .await
            .unwrap()
            .len();
        assert_eq!(
            failed,
            0,
            "a scenario failed:\n{}",
            c.source().await.unwrap()
        );
        if passed > 0 && passed < total {
            saw_partial = true;
        }
        // Every row can be in while the run is still `running` (its report is made after the
        // last scenario); the page shows the verdict at its next poll: wait for `done`.
        let state = c
            .find(Locator::Id("review"))
            .await
            .unwrap()
            .attr("data-state")
            .await
            .unwrap();
        if passed == total && state.as_deref() == Some("done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let progress = c
        .find(Locator::Id("progress"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(progress, format!("All {total} scenarios PASS"));
    assert!(saw_partial, "the table filled in while the review ran");
    let summary = c
        .find(Locator::Id("summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.contains("slowest webhook ack"), "{summary}");
    click(c, Locator::Id("report-link")).await;
    c.wait()
        .for_element(Locator::Css("section.scenario details"))
        .await
        .unwrap();
    let report = c.source().await.unwrap();
    assert!(report.contains(&format!("All {total} scenarios PASS")));
    assert!(report.contains("Evidence: order"));
}
