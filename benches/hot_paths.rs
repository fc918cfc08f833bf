//! Criterion benchmarks of the hot pure paths (issue 9), all through the crate's public API:
//! msgAuthValue sign and verify, the QR images of a payment page URL, both KICC notifications
//! parsed, and the catalog and order pages rendered. Results and what limits each figure:
//! docs/BENCHMARKS.md, "Hot paths (criterion)". Run: `cargo bench --bench hot_paths`.

use std::hint::black_box;

use askama::Template;
use criterion::{Criterion, criterion_group, criterion_main};

use kicc_checkout::domain::{Currency, Money, Product};
use kicc_checkout::kicc::crypto::{msg_auth_value, verify_msg_auth_value};
use kicc_checkout::kicc::webhook::parse_notification;
use kicc_checkout::web::pages::{CatalogPage, Layout, OrderLineView, OrderPage, ProductView};
use kicc_checkout::web::qr;

/// The sandbox merchant's secret has this shape; any key of this length costs the same.
const SECRET: &str = "easypay-test-secret";

/// A 60-character code URL: the sandbox's scan page on a LAN address (what a phone on the same
/// network opens), cut to 60 characters so every run encodes the same QR version (4-M, 33×33).
fn code_url() -> String {
    let url = "http://192.168.0.12:8080/sandbox/wechat/scan/26112115301200000001"[..60].to_owned();
    assert_eq!(url.len(), 60);
    url
}

fn msg_auth(c: &mut Criterion) {
    // Spec 02's approval response: msgAuthValue over pgCno|amount|transactionDate.
    let fields = ["26112115301200000001", "12000", "20261121153512"];
    let tag = msg_auth_value(SECRET, &fields);
    let mut group = c.benchmark_group("msg_auth_value");
    group.bench_function("sign", |b| {
        b.iter(|| msg_auth_value(black_box(SECRET), black_box(&fields)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            assert!(verify_msg_auth_value(
                black_box(SECRET),
                black_box(&fields),
                black_box(&tag)
            ))
        })
    });
    group.finish();
}

fn qr_images(c: &mut Criterion) {
    let url = code_url();
    let mut group = c.benchmark_group("qr");
    // A URL's first request (or one after it left the cache): encode, then draw.
    group.bench_function("encode+svg", |b| {
        b.iter(|| qr::svg(&qr::encode(black_box(&url)).unwrap()))
    });
    group.bench_function("encode+png", |b| {
        b.iter(|| qr::png(&qr::encode(black_box(&url)).unwrap(), qr::PNG_SCALE))
    });
    // Every later request of `GET /orders/{no}/qr.svg` and `qr.png` (and the order page's inline
    // SVG): a cache hit, and the body copied out as the handlers do.
    let cache = qr::QrCache::default();
    cache.get(&url).unwrap().png();
    group.bench_function("svg per request (cached)", |b| {
        b.iter(|| cache.get(black_box(&url)).unwrap().svg().to_owned())
    });
    group.bench_function("png per request (cached)", |b| {
        b.iter(|| cache.get(black_box(&url)).unwrap().png().to_vec())
    });
    // The parts, to see where the time goes.
    let code = qr::encode(&url).unwrap();
    group.bench_function("encode", |b| {
        b.iter(|| qr::encode(black_box(&url)).unwrap())
    });
    group.bench_function("svg", |b| b.iter(|| qr::svg(black_box(&code))));
    group.bench_function("png", |b| {
        b.iter(|| qr::png(black_box(&code), qr::PNG_SCALE))
    });
    group.finish();
}

fn webhooks(c: &mut Criterion) {
    let approval = include_bytes!("../tests/fixtures/spec/04-notification-from-table.json");
    let cancel = include_bytes!("../tests/fixtures/spec/05-notification-from-table.json");
    let mut group = c.benchmark_group("parse_notification");
    group.bench_function("approval (spec 04)", |b| {
        b.iter(|| parse_notification(black_box(approval)).unwrap())
    });
    group.bench_function("cancel (spec 05)", |b| {
        b.iter(|| parse_notification(black_box(cancel)).unwrap())
    });
    group.finish();
}

/// The demo catalog as migrations/sqlite/2026-11-21-000002_demo_catalog seeds it.
fn demo_catalog() -> Vec<Product> {
    let rows: [(&str, &str, &str, i64, i64); 7] = [
        (
            "CLASSIC-TEE",
            "Classic Cotton Tee",
            "Heavy 220 g organic cotton, boxy fit, in ink black.",
            19000,
            1450,
        ),
        (
            "CERAMIC-MUG",
            "Ceramic Coffee Mug",
            "Stoneware mug, 350 ml, glazed by hand in Icheon.",
            12000,
            1203,
        ),
        (
            "CANVAS-TOTE",
            "Canvas Tote Bag",
            "Washed canvas with an inner pocket; carries a laptop.",
            24000,
            1840,
        ),
        (
            "BASEBALL-CAP",
            "Washed Baseball Cap",
            "Six-panel cotton twill cap with a brass buckle.",
            21000,
            1610,
        ),
        (
            "DOT-NOTEBOOK",
            "A5 Dot Grid Notebook",
            "160 pages of 100 g paper that takes fountain pens.",
            8500,
            650,
        ),
        (
            "ZIP-HOODIE",
            "Heavyweight Zip Hoodie",
            "Brushed-back fleece, YKK zip, made in Seoul.",
            49000,
            3760,
        ),
        (
            "STICKER-PACK",
            "Sticker Pack",
            "Five vinyl stickers: the cheapest way to test a payment.",
            1000,
            77,
        ),
    ];
    rows.iter()
        .map(|&(sku, name, description, krw, usd)| Product {
            sku: sku.into(),
            name: name.into(),
            description: description.into(),
            price_krw: Money::from_minor(krw, Currency::Krw).unwrap(),
            price_usd: Money::from_minor(usd, Currency::Usd).unwrap(),
        })
        .collect()
}

/// The order page as `web::checkout::order_page` fills it: a ₩12,000 mug paid with WeChat Pay.
fn order_page(status: &str, qr_svg: String) -> OrderPage {
    let paid = status == "paid";
    OrderPage {
        layout: Layout::new("Order 261121-1530-K7QX9M2A", true),
        shop_order_no: "261121-1530-K7QX9M2A".into(),
        status: status.into(),
        heading: if paid {
            "Thank you — your payment is complete"
        } else {
            "Scan to pay with WeChat Pay"
        }
        .into(),
        amount: "₩12,000".into(),
        cancelled: None,
        goods_name: "Ceramic Coffee Mug".into(),
        pay_method: "WeChat Pay".into(),
        pg_cno: paid.then(|| "26112115301200000001".into()),
        approval_no: paid.then(|| "12345678".into()),
        approval_date: paid.then(|| "2026-11-21 15:35:12 KST".into()),
        qr_svg,
        waiting: !paid,
        expires_in: if paid { 0 } else { 600 },
        expires_at: "15:40 UTC".into(),
        lines: vec![OrderLineView {
            name: "Ceramic Coffee Mug".into(),
            quantity: 1,
            total: "₩12,000".into(),
        }],
        late_refund: None,
    }
}

fn pages(c: &mut Criterion) {
    let products = demo_catalog();
    let catalog = CatalogPage {
        layout: Layout::new("Catalog", true),
        products: products.iter().map(ProductView::from).collect(),
    };
    let svg = qr::svg(&qr::encode(&code_url()).unwrap());
    let pending = order_page("pending", svg);
    let paid = order_page("paid", String::new());
    let mut group = c.benchmark_group("render");
    group.bench_function("catalog (7 products)", |b| {
        b.iter(|| black_box(&catalog).render().unwrap())
    });
    group.bench_function("order pending native (inline QR)", |b| {
        b.iter(|| black_box(&pending).render().unwrap())
    });
    group.bench_function("order paid", |b| {
        b.iter(|| black_box(&paid).render().unwrap())
    });
    group.finish();
}

criterion_group!(benches, msg_auth, qr_images, webhooks, pages);
criterion_main!(benches);
