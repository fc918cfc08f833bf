//! `POST /webhooks/kicc/payment` and `POST /webhooks/kicc/cancel`: both accept either
//! notification (told apart by their fields), so a merchant may register one notifyUrl or two.
//! Thin: read the body (capped), find the source, hand it to `Checkout`, send the ack, then run
//! the follow-up (never before the ack: spec 04/05 ask for an answer within 10 s).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use super::AppState;
use super::client_ip::{self, is_allowed};
use crate::checkout::webhooks::{Delivery, MAX_BODY};

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
    let delivery = Delivery {
        route,
        source_ip: source.to_string(),
        allowed: is_allowed(source, &state.config.webhook_allowed_ips),
        headers: headers_json(&req),
        body,
        json_content_type,
        too_large,
    };
    let (ack, follow_up) = state.checkout.receive_notification(delivery).await;
    state.checkout.queue_follow_up(follow_up);
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(ack.http_status)
            .unwrap_or(actix_web::http::StatusCode::OK),
    )
    .content_type("application/json; charset=utf-8")
    .body(ack.body)
}
