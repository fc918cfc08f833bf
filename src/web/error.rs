//! The one place errors become HTTP responses: an HTML page for people (JSON for the API and
//! the webhooks is added beside it by the routes that speak JSON).

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError, web};
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
}

impl From<CheckoutError> for WebError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::EmptyCart => WebError::BadRequest("Your cart is empty.".into()),
            CheckoutError::Invalid(v) => WebError::BadRequest(v.to_string()),
            CheckoutError::KiccPayNotOffered => {
                WebError::BadRequest("KICC Pay is not offered here.".into())
            }
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
        render_page(
            status,
            &ErrorPage {
                layout: Layout::new(heading, false),
                status: status.as_u16(),
                heading,
                message: &message,
            },
        )
    }
}

/// An error page with the app's layout (used where the state is at hand, e.g. the 404 route).
pub fn render_error_page(
    state: &web::Data<AppState>,
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
