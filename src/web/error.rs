//! The one place errors become HTTP responses: an HTML page for people (JSON for the API and
//! the webhooks is added beside it by the routes that speak JSON), including what actix's
//! extractors refuse (bodies over the limits, wrong content types, forms and queries that do
//! not parse): their plain-text default answers never reach anyone.

use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError, UrlencodedError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;

use super::AppState;
use super::pages::{ErrorPage, Layout};
use crate::checkout::CheckoutError;
use crate::db::DbError;
use crate::kicc::ClientError;

/// What a page handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The thing asked for does not exist (`what` is shown to the person).
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A form without this browser's CSRF token (the message says to reload).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The payment gateway refused or did not answer (its message is shown).
    #[error("payment gateway: {0}")]
    Gateway(String),
    #[error("page did not render: {0}")]
    Render(String),
    /// A body over the route's limit (bytes).
    #[error("body over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Over the checkout rate limit: try again after this many seconds.
    #[error("too many requests (retry after {retry_after} s)")]
    TooManyRequests { retry_after: u64 },
    /// The body did not arrive within `REQUEST_BODY_TIMEOUT_SECS` (`web::slow_body`).
    #[error("the request body did not arrive within {seconds} s")]
    RequestTimeout { seconds: u64 },
}

/// Form bodies (every shop and dashboard form, the sandbox's pages).
pub const FORM_LIMIT: usize = 16 * 1024;
/// JSON bodies (`POST /api/orders`).
pub const JSON_LIMIT: usize = 64 * 1024;
/// Raw bodies read whole (`POST /checkout/return`, the sandbox's KICC API). The webhooks read
/// their own, capped at the same 64 KiB with a KICC-shaped answer.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The body limits and extractor error answers of every route (app-wide `app_data`).
pub fn body_limits(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(FORM_LIMIT)
            .error_handler(form_error),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PayloadConfig::new(BODY_LIMIT));
}

fn form_error(err: UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    match err {
        UrlencodedError::Overflow { .. } | UrlencodedError::Payload(PayloadError::Overflow) => {
            WebError::PayloadTooLarge { limit: FORM_LIMIT }
        }
        UrlencodedError::ContentType => WebError::UnsupportedMediaType(
            "A form is sent as application/x-www-form-urlencoded.".into(),
        ),
        other => WebError::BadRequest(format!("The form could not be read ({other}).")),
    }
    .into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    WebError::BadRequest(format!("The address could not be read ({err}).")).into()
}

/// JSON bodies are the API's: its error shape, never actix's text.
fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use super::api::ApiError;
    match err {
        JsonPayloadError::Overflow { .. }
        | JsonPayloadError::OverflowKnownLength { .. }
        | JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::payload_too_large(),
        JsonPayloadError::ContentType => ApiError::unsupported_media_type(),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            other.to_string(),
            None,
        ),
    }
    .into()
}

impl WebError {
    /// What the raw-body extractor (`web::Bytes`, [`BODY_LIMIT`]) refused.
    pub fn from_payload(err: &actix_web::Error) -> Self {
        match err.as_error::<PayloadError>() {
            Some(PayloadError::Overflow) => WebError::PayloadTooLarge { limit: BODY_LIMIT },
            _ => WebError::BadRequest(format!("The request could not be read ({err}).")),
        }
    }
}

impl From<CheckoutError> for WebError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::EmptyCart => WebError::BadRequest("Your cart is empty.".into()),
            CheckoutError::Invalid(v) => WebError::BadRequest(v.to_string()),
            CheckoutError::KiccPayNotOffered => {
                WebError::BadRequest("KICC Pay is not offered here.".into())
            }
            CheckoutError::IdempotencyKeyReused => WebError::BadRequest(
                "This form was already sent with other details. Reload it and try again.".into(),
            ),
            CheckoutError::Declined { message, .. } => WebError::Gateway(message),
            CheckoutError::GatewayUnavailable { .. } => {
                WebError::Gateway("The payment service did not answer. Nothing was charged.".into())
            }
            CheckoutError::Db(e) => WebError::Db(e),
            CheckoutError::Client(ClientError::Record(e)) => WebError::Db(e),
            CheckoutError::Client(e) => WebError::Render(e.to_string()),
        }
    }
}

impl WebError {
    fn page_text(&self) -> (&'static str, String) {
        match self {
            WebError::NotFound { what } => (
                "Not found",
                format!("We could not find that {what}. It may have been removed."),
            ),
            WebError::BadRequest(message) => ("That did not work", message.clone()),
            WebError::Forbidden(message) => ("Please reload the page", message.clone()),
            WebError::Db(_) | WebError::Render(_) => (
                "Something went wrong on our side",
                "Nothing was charged by this error. Please try again in a moment.".to_owned(),
            ),
            WebError::Gateway(message) => {
                ("The payment service did not accept this", message.clone())
            }
            WebError::PayloadTooLarge { limit } => (
                "That was too much",
                format!(
                    "We accept at most {} KiB here. Nothing was changed.",
                    limit / 1024
                ),
            ),
            WebError::UnsupportedMediaType(message) => ("That did not work", message.clone()),
            WebError::TooManyRequests { retry_after } => (
                "Too many attempts",
                format!(
                    "Too many payments were started from your address just now. Nothing was \
                     charged by this. Please wait {retry_after} seconds and try again."
                ),
            ),
            WebError::RequestTimeout { seconds } => (
                "That took too long",
                format!(
                    "Your browser did not finish sending the form within {seconds} seconds. \
                     Nothing was changed. Please try again."
                ),
            ),
        }
    }
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::NotFound { .. } => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Db(DbError::Pool(_)) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Db(_) | WebError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Gateway(_) => StatusCode::BAD_GATEWAY,
            WebError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            // The cause goes to the log, never to the page.
            log::error!("request failed: {self}");
        }
        let (heading, message) = self.page_text();
        // ResponseError has no access to app data; the page renders without the sandbox badge.
        let mut response = render_page(
            status,
            &ErrorPage {
                layout: Layout::new(heading, false),
                status: status.as_u16(),
                heading,
                message: &message,
            },
        );
        if let WebError::TooManyRequests { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after));
        }
        response
    }
}

/// An error page with the app's layout (used where the state is at hand, e.g. the 404 route).
pub fn render_error_page(
    state: &AppState,
    status: StatusCode,
    heading: &str,
    message: &str,
) -> HttpResponse {
    let layout = Layout::new(heading, state.config.is_sandbox());
    render_page(
        status,
        &ErrorPage {
            layout,
            status: status.as_u16(),
            heading,
            message,
        },
    )
}

fn render_page(status: StatusCode, page: &ErrorPage<'_>) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(html),
        Err(e) => {
            log::error!("error page failed to render: {e}");
            HttpResponse::build(status)
                .content_type(ContentType::plaintext())
                .body(page.heading.to_owned())
        }
    }
}
