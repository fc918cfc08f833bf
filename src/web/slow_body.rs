//! Slow request bodies: a body has `REQUEST_BODY_TIMEOUT_SECS` (default 10 s) to arrive in
//! full, counted from the moment its head was read. actix's `client_request_timeout` covers the
//! head only, so a body trickled a byte a second would hold a connection (and a worker's
//! attention) for ever. One app-wide middleware wraps the payload: past the deadline the reader
//! (a form or JSON extractor, the returnUrl's `Bytes`, the webhook handler's own loop) gets an
//! error, and the answer becomes 408 in the route's shape — KICC's `{resCd:"9408",…}` on the
//! webhook routes, the API's JSON error under `/api/`, the HTML error page elsewhere — with
//! `Connection: close`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use futures_util::Stream;

use super::AppState;

/// Our webhook ack code for a body that did not arrive in time (KICC resends on any code but
/// `0000`), beside those of `checkout::webhooks::codes`.
pub const WEBHOOK_TIMEOUT_CODE: &str = "9408";

/// Whether a payload error is this middleware's deadline (the webhook handler then stores
/// nothing: the notification never arrived whole, and KICC resends).
pub fn is_timeout(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// The request's payload with a deadline. Past it, one `TimedOut` error, then the end; `timed_out`
/// tells the middleware to answer 408 whatever the handler made of the error.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: Rc<Cell<bool>>,
    finished: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.finished = true;
                    this.timed_out.set(true);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
            },
        }
    }
}

/// Middleware (app-wide, innermost): bounds the time a request body may take to arrive.
pub async fn deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.config.request_body_timeout);
    let payload = req.take_payload();
    let (Some(limit), false) = (limit, matches!(payload, Payload::None)) else {
        // No body to wait for.
        req.set_payload(payload);
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let timed_out = Rc::new(Cell::new(false));
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Deadline {
        inner: payload,
        sleep: Box::pin(tokio::time::sleep(limit)),
        timed_out: timed_out.clone(),
        finished: false,
    });
    req.set_payload(Payload::from(stream));
    let res = next.call(req).await?;
    if !timed_out.get() {
        return Ok(res.map_into_boxed_body());
    }
    let (req, _) = res.into_parts();
    log::warn!(
        "{} {}: the body did not arrive within {} s (408)",
        req.method(),
        req.path(),
        limit.as_secs()
    );
    let mut answer = answer(req.path(), limit);
    answer
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    Ok(ServiceResponse::new(req, answer))
}

/// The 408 in the route's shape.
fn answer(path: &str, limit: Duration) -> HttpResponse {
    let message = format!(
        "the request body did not arrive within {} s",
        limit.as_secs()
    );
    if path.starts_with("/webhooks/") {
        HttpResponse::build(StatusCode::REQUEST_TIMEOUT)
            .content_type("application/json; charset=utf-8")
            .body(crate::kicc::webhook::ack_body(
                WEBHOOK_TIMEOUT_CODE,
                &message,
                "",
            ))
    } else if path.starts_with("/api/") {
        super::api::ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            message,
            None,
        )
        .error_response()
    } else {
        super::WebError::RequestTimeout {
            seconds: limit.as_secs(),
        }
        .error_response()
    }
}
