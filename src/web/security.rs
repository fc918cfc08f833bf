//! Security headers on every response of the app (shop, dashboard, API, webhooks, static files,
//! the mounted sandbox): Content-Security-Policy, nosniff, Referrer-Policy, frame denial, and
//! HSTS when the shop is served over https. Built once at start, added by one `DefaultHeaders`
//! middleware in `startup.rs`. And `Cache-Control: no-store` on the pages that show personal or
//! order data (`no_store`), so no browser or shared cache keeps them.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, Next};

use crate::config::{Config, GatewayMode, KiccPayWindow};

/// The Content-Security-Policy for `base_url` (the app's public base).
///
/// - No inline script or style anywhere: every script and stylesheet is a file under
///   `/static` (or the sandbox's `/sandbox/assets`), so `script-src 'self'` and `style-src 'self'`.
/// - `frame-ancestors 'none'`: no page may be framed (clickjacking of Pay or Cancel).
/// - `form-action`: the app's forms post to the app itself, but a form's redirect is checked
///   too. `POST /checkout` answers a phone with a 303 to KICC's `paymentPageUrl` and KICC Pay
///   with a 303 to `KICCPAY_WINDOW_URL`, and the sandbox's return page posts to the returnUrl
///   under `PUBLIC_BASE_URL` (which may not be the origin the page was opened on). So the list
///   is: this origin, `PUBLIC_BASE_URL`'s, the KICC API's, the KICC Pay window's, and
///   `PAYMENT_PAGE_ORIGINS` (where KICC's mweb `paymentPageUrl` lives: KICC chooses that host
///   and does not publish it, so live mode allows any https page unless the variable names
///   them). KICC's own pages post back to our returnUrl under KICC's policy, not ours.
pub fn content_security_policy(config: &Config, base_url: &str) -> String {
    let mut form_action = vec!["'self'".to_owned()];
    let mut add = |source: String| {
        if !form_action.contains(&source) {
            form_action.push(source);
        }
    };
    add(origin(base_url));
    if let GatewayMode::Live { api_base } = &config.gateway {
        add(origin(api_base));
    }
    if let KiccPayWindow::Url(window) = &config.kiccpay.window {
        add(origin(window));
    }
    for source in config.payment_page_origins.sources(config.is_sandbox()) {
        add(source);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action {}",
        form_action.join(" ")
    )
}

/// `scheme://host[:port]` of an absolute URL (config URLs are checked at start).
fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_owned())
}

/// The headers every response gets, computed once at start (a handler's own value of the same
/// header wins).
#[derive(Debug, Clone)]
pub struct SecurityHeaders(Vec<(&'static str, String)>);

impl SecurityHeaders {
    pub fn new(config: &Config, base_url: &str) -> Self {
        let mut headers = vec![
            (
                "Content-Security-Policy",
                content_security_policy(config, base_url),
            ),
            ("X-Content-Type-Options", "nosniff".to_owned()),
            // The returnUrl GET carries authorizationId in its query: no URL of ours leaves the
            // site in a Referer header, while our own pages still see where a click came from.
            ("Referrer-Policy", "same-origin".to_owned()),
            ("X-Frame-Options", "DENY".to_owned()),
        ];
        if is_https(base_url) {
            headers.push(("Strict-Transport-Security", "max-age=31536000".to_owned()));
        }
        Self(headers)
    }

    /// The middleware (one per worker: `DefaultHeaders` is not `Send`).
    pub fn middleware(&self) -> DefaultHeaders {
        self.0
            .iter()
            .fold(DefaultHeaders::new(), |m, (name, value)| {
                m.add((*name, value.as_str()))
            })
    }
}

/// Whether a path's answers show personal or order data: the dashboard (its sign-in page and
/// the CSV export too), the shopper's order pages and QR images, the checkout (its form shown
/// again with the customer's details, the QR page, the returnUrl), and the API's orders. Not the
/// catalog, the cart or static files.
pub fn is_private(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '.']))
    };
    under("/admin") || under("/orders") || under("/checkout") || under("/api/orders")
}

/// Middleware: `Cache-Control: no-store` on every answer of a private path (see
/// [`is_private`]), whatever the handler said.
pub async fn no_store(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let private = is_private(req.path());
    let mut response = next.call(req).await?;
    if private {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(response)
}

/// Whether the app is served over https (`PUBLIC_BASE_URL`): its cookies are then `Secure`.
pub fn is_https(base_url: &str) -> bool {
    base_url.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&'static str, &str)]) -> Config {
        let vars: Vec<(&'static str, String)> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::from_lookup(|var| Ok(vars.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone())))
            .unwrap()
    }

    fn directive<'a>(csp: &'a str, name: &str) -> &'a str {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing in {csp}"))
    }

    #[test]
    fn pages_with_personal_or_order_data_are_private_and_the_shop_is_not() {
        for private in [
            "/admin",
            "/admin/login",
            "/admin/orders",
            "/admin/orders.csv",
            "/admin/orders/ORD-1",
            "/orders/ORD-1",
            "/orders/ORD-1/qr.svg",
            "/checkout",
            "/checkout/return",
            "/api/orders",
            "/api/orders/ORD-1",
        ] {
            assert!(is_private(private), "{private}");
        }
        for public in [
            "/",
            "/products/CERAMIC-MUG",
            "/cart",
            "/static/style.css",
            "/api/products",
            "/healthz",
            "/administrator",
            "/ordersfeed",
        ] {
            assert!(!is_private(public), "{public}");
        }
    }

    #[test]
    fn sandbox_mode_allows_forms_to_this_origin_and_the_public_base_only() {
        let csp = content_security_policy(&config(&[]), "http://127.0.0.1:8080");
        assert_eq!(directive(&csp, "script-src"), "script-src 'self'");
        assert_eq!(directive(&csp, "frame-ancestors"), "frame-ancestors 'none'");
        assert_eq!(
            directive(&csp, "form-action"),
            "form-action 'self' http://127.0.0.1:8080"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    }

    #[test]
    fn live_mode_allows_the_gateway_the_window_and_the_payment_pages() {
        let live = [
            ("KICC_API_BASE", "https://testpgapi.easypay.co.kr"),
            ("KICC_MALL_ID", "T5102001"),
            ("KICC_SECRET_KEY", "k"),
            ("ADMIN_PASSWORD", "correct horse"),
        ];
        let csp = content_security_policy(&config(&live), "https://shop.example.com");
        assert_eq!(
            directive(&csp, "form-action"),
            "form-action 'self' https://shop.example.com https://testpgapi.easypay.co.kr https:"
        );
        let mut named = live.to_vec();
        named.push((
            "PAYMENT_PAGE_ORIGINS",
            "https://wx.example.com, https://pay.example.com:8443",
        ));
        named.push((
            "KICCPAY_WINDOW_URL",
            "https://window.example.com/kiccpay/open",
        ));
        for var in [
            "KICCPAY_TID",
            "KICCPAY_SVC_ID",
            "KICCPAY_CHANNEL_ID",
            "KICCPAY_SECRET_KEY",
        ] {
            named.push((var, "X1"));
        }
        named.push(("KICCPAY_BIZR_NO", "1234567890"));
        named.push(("KICCPAY_AES_KEY", crate::config::SANDBOX_KICCPAY_AES_KEY));
        named.push(("KICCPAY_AES_IV", crate::config::SANDBOX_KICCPAY_AES_IV));
        let csp = content_security_policy(&config(&named), "https://shop.example.com");
        assert_eq!(
            directive(&csp, "form-action"),
            "form-action 'self' https://shop.example.com https://testpgapi.easypay.co.kr \
             https://window.example.com https://wx.example.com https://pay.example.com:8443"
        );
    }
}
