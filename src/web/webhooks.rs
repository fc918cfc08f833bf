//! `POST /webhooks/kicc/payment` and `POST /webhooks/kicc/cancel`: both accept either
//! notification (told apart by their fields), so a merchant may register one notifyUrl or two.
//! Thin: read the body (capped), find the source, hand it to `Checkout`, send the ack, then run
//! the follow-up (never before the ack: spec 04/05 ask for an answer within 10 s).
//!
//! A delivery from a source not allowed is refused (403) and stored as evidence, but not as
//! it came: its body and headers are cut to [`REFUSED_KEEP`] bytes each, at most
//! [`REFUSED_STORED_PER_SOURCE`] a minute are stored per source (and [`REFUSED_STORED_IN_ALL`]
//! from all sources), and they are deleted after `WEBHOOK_REFUSED_RETENTION_DAYS`
//! (`startup::purge_refused_deliveries`). Beyond the limits a refused delivery gets the same
//! answer and is only counted (`webhook_refused_unstored_total`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use super::AppState;
use super::client_ip::{self, is_allowed};
use super::rate_limit::RateLimiter;
use crate::checkout::webhooks::{Ack, Delivery, MAX_BODY};
use crate::kicc::webhook::parse_notification;

/// What is kept of a refused delivery: its body and its headers (as JSON) each at most this
/// many bytes, the cut noted in what is kept.
pub const REFUSED_KEEP: usize = 2 * 1024;
/// Refused deliveries stored per source address a minute (an IPv6 source counted by its /64,
/// which one host may own whole), per instance.
pub const REFUSED_STORED_PER_SOURCE: u32 = 20;
/// Refused deliveries stored a minute from all sources together, per instance.
pub const REFUSED_STORED_IN_ALL: u32 = 600;

/// Which refused deliveries are stored ([`REFUSED_STORED_PER_SOURCE`],
/// [`REFUSED_STORED_IN_ALL`]).
pub struct RefusedStore {
    per_source: RateLimiter,
    in_all: RateLimiter,
}

impl Default for RefusedStore {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        Self {
            per_source: RateLimiter::new(REFUSED_STORED_PER_SOURCE, minute),
            in_all: RateLimiter::new(REFUSED_STORED_IN_ALL, minute),
        }
    }
}

impl RefusedStore {
    /// Whether a refused delivery from `source` is stored now (and counted against it).
    fn admit(&self, source: IpAddr) -> bool {
        let network = match source {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            other => other,
        };
        self.per_source.take(network).is_ok()
            && self.in_all.take(Ipv4Addr::UNSPECIFIED.into()).is_ok()
    }
}

/// A refused delivery's body as stored: at most [`REFUSED_KEEP`] bytes of text, ending with a
/// note of what was received when it was cut. (Stored as text either way: invalid UTF-8 is
/// replaced first, so the cut is what is stored.)
fn refused_body(body: Vec<u8>, too_large: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(&body);
    if text.len() <= REFUSED_KEEP {
        return body;
    }
    let more = if too_large { " or more" } else { "" };
    let note = format!(" [truncated: {} bytes{more} received]", body.len());
    let mut end = REFUSED_KEEP - note.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end]).into_bytes()
}

/// A refused delivery's headers as stored: a JSON object of at most [`REFUSED_KEEP`] bytes.
/// When they are longer, the headers that fit are kept whole and `(truncated)` says how long they
/// were.
fn refused_headers(json: String) -> String {
    if json.len() <= REFUSED_KEEP {
        return json;
    }
    const CUT: &str = "(truncated)";
    let encoded_len =
        |v: &serde_json::Value| serde_json::to_string(v).map_or(usize::MAX, |s| s.len());
    let all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&json).unwrap_or_default();
    let note = serde_json::Value::from(format!("{} bytes of headers received", json.len()));
    // `{"(truncated)":"…"}`: the braces, the quoted key, the colon, the note.
    let mut used = 2 + CUT.len() + 2 + 1 + encoded_len(&note);
    let mut kept = serde_json::Map::new();
    for (name, value) in all {
        // `"name":value,`
        let cost = encoded_len(&name.clone().into()).saturating_add(encoded_len(&value)) + 2;
        if used.saturating_add(cost) <= REFUSED_KEEP {
            used += cost;
            kept.insert(name, value);
        }
    }
    kept.insert(CUT.into(), note);
    serde_json::Value::Object(kept).to_string()
}

/// The answer to a refused delivery that is not stored: the one [`Checkout`] gives a stored
/// one (the pgCno echoed when the body is a notification).
///
/// [`Checkout`]: crate::checkout::Checkout
fn refused_unstored(delivery: &Delivery) -> Ack {
    let echo = (delivery.json_content_type && !delivery.too_large)
        .then(|| parse_notification(&delivery.body).ok())
        .flatten()
        .map(|n| n.pg_cno().to_owned())
        .unwrap_or_default();
    Ack::forbidden(&delivery.source_ip, &echo)
}

/// Headers kept with a delivery (never cookies or credentials), as a JSON object. Written
/// straight from the header map: no intermediate `serde_json::Map` (a sorted tree of owned
/// strings per delivery).
fn headers_json(req: &HttpRequest) -> String {
    struct Kept<'a>(&'a actix_web::http::header::HeaderMap);
    impl serde::Serialize for Kept<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(
                self.0
                    .keys()
                    .filter(|name| {
                        !matches!(
                            name.as_str(),
                            "cookie" | "authorization" | "proxy-authorization"
                        )
                    })
                    .map(|name| {
                        fn text(v: &actix_web::http::header::HeaderValue) -> &str {
                            v.to_str().unwrap_or("<binary>")
                        }
                        let mut values = self.0.get_all(name);
                        let first = values.next().map_or("", text);
                        // A repeated header keeps every value, joined as HTTP does (RFC 9110
                        // §5.3).
                        let value: std::borrow::Cow<'_, str> = match values.next() {
                            None => first.into(),
                            Some(second) => std::iter::once(first)
                                .chain(std::iter::once(text(second)))
                                .chain(values.map(text))
                                .collect::<Vec<_>>()
                                .join(", ")
                                .into(),
                        };
                        (name.as_str(), value)
                    }),
            )
        }
    }
    serde_json::to_string(&Kept(req.headers())).expect("strings serialize")
}

pub async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let route = if req.path().ends_with("/cancel") {
        "/webhooks/kicc/cancel"
    } else {
        "/webhooks/kicc/payment"
    };
    let mut body = Vec::new();
    let mut too_large = false;
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // Too slow: nothing is stored (the notification never arrived whole; KICC resends)
            // and `slow_body` answers 408 with our 9408 ack.
            Err(e) if super::slow_body::is_timeout(&e) => {
                return HttpResponse::RequestTimeout().finish();
            }
            Err(_) => break,
        };
        if body.len() + chunk.len() > MAX_BODY {
            body.extend_from_slice(&chunk[..MAX_BODY - body.len()]);
            too_large = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let source = client_ip::of_request(&req, &state.config.trusted_proxies);
    let json_content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let allowed = is_allowed(source, &state.config.webhook_allowed_ips);
    let (headers, body) = if allowed {
        (headers_json(&req), body)
    } else {
        (
            refused_headers(headers_json(&req)),
            refused_body(body, too_large),
        )
    };
    let delivery = Delivery {
        route,
        source_ip: source.to_string(),
        allowed,
        headers,
        body,
        json_content_type,
        too_large,
    };
    let ack = if allowed || state.refused_webhooks.admit(source) {
        let (ack, follow_up) = state.checkout.receive_notification(delivery).await;
        state.checkout.queue_follow_up(follow_up);
        ack
    } else {
        state.metrics.count_refused_unstored();
        log::debug!("webhook from {source}: refused, over the store limit, not stored");
        refused_unstored(&delivery)
    };
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(ack.http_status)
            .unwrap_or(actix_web::http::StatusCode::OK),
    )
    .content_type("application/json; charset=utf-8")
    .body(ack.body)
}
