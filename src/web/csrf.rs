//! CSRF protection for the shop's forms (`POST /cart/items`, `POST /cart/items/{sku}/remove`,
//! `POST /checkout`). The shopper is anonymous, so the token is a random value in a signed
//! per-browser cookie, and every form sends it back in the hidden field `csrf` (double submit).
//! Another site can make the browser send the cookie but can neither read it nor forge its
//! signature, so it cannot put the matching value in the form. Over https the cookie is
//! `__Host-` prefixed: browsers then refuse one planted by a sibling subdomain. Compared in
//! constant time by the dashboard's `same_token`.
//!
//! Pages take a [`ShopCsrf`] (an extractor): the browser's token, or a new one that
//! [`issue_cookie`] (a middleware) sets on the response. Responses that never asked for a token
//! (the API, webhooks) get no cookie.

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::AppState;
use super::admin_auth::{random_token, read_signed, same_token, sign};
use super::error::WebError;

const COOKIE: &str = "shop_csrf";
const HOST_COOKIE: &str = "__Host-shop_csrf";

fn cookie_name(https: bool) -> &'static str {
    if https { HOST_COOKIE } else { COOKIE }
}

/// This browser's CSRF token (from its cookie, or new for this response).
#[derive(Debug, Clone)]
pub struct ShopCsrf {
    token: String,
}

/// A token made for this request: its cookie goes on the response.
#[derive(Clone)]
struct NewCookie(Cookie<'static>);

impl ShopCsrf {
    fn of(req: &HttpRequest) -> Result<Self, WebError> {
        if let Some(known) = req.extensions().get::<ShopCsrf>() {
            return Ok(known.clone());
        }
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| WebError::Render("app state missing".into()))?;
        let name = cookie_name(state.https());
        let token = match read_signed(req, &state.cookie_key, name).filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => {
                let token = random_token();
                let mut cookie = Cookie::new(name, token.clone());
                cookie.set_path("/");
                cookie.set_http_only(true);
                cookie.set_same_site(SameSite::Lax);
                cookie.set_secure(state.https());
                req.extensions_mut()
                    .insert(NewCookie(sign(&state.cookie_key, cookie)));
                token
            }
        };
        let csrf = ShopCsrf { token };
        req.extensions_mut().insert(csrf.clone());
        Ok(csrf)
    }

    /// The value for the forms' hidden `csrf` field.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A shop POST must send back this browser's token; else 403 and nothing changes.
    pub fn verify(&self, submitted: &str) -> Result<(), WebError> {
        if same_token(submitted, &self.token) {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "This form has expired or did not come from this shop. Reload the page and try \
                 again."
                    .into(),
            ))
        }
    }
}

impl FromRequest for ShopCsrf {
    type Error = WebError;
    type Future = Ready<Result<Self, WebError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(ShopCsrf::of(req))
    }
}

/// Sets the cookie of a token made while handling the request.
pub async fn issue_cookie(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let new = response.request().extensions().get::<NewCookie>().cloned();
    if let Some(NewCookie(cookie)) = new {
        response.response_mut().add_cookie(&cookie)?;
    }
    Ok(response)
}
