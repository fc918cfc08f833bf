//! Dashboard sign-in: `ADMIN_USER` / `ADMIN_PASSWORD` (argon2 hash kept in memory), a signed
//! session cookie (HttpOnly, SameSite=Strict, Secure over https) that carries the session's
//! CSRF token, and a per-IP limit on failed sign-ins.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use subtle::ConstantTimeEq;

use super::rate_limit::RateLimiter;

pub const SESSION_COOKIE: &str = "admin";
pub const LOGIN_COOKIE: &str = "admin_login";
/// A session lasts this long after sign-in.
const SESSION_LIFE: Duration = Duration::from_secs(8 * 3600);
/// Failed sign-ins allowed per address and window.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

pub struct AdminAuth {
    user: String,
    password_hash: String,
    /// Failed sign-ins per address.
    failures: RateLimiter,
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Every dashboard form carries it; a POST without it is refused.
    pub csrf: String,
}

impl AdminAuth {
    pub fn new(user: &str, password: &str) -> Self {
        let salt = SaltString::generate(&mut OsRng);
        let password_hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 hashes")
            .to_string();
        Self {
            user: user.to_owned(),
            password_hash,
            failures: RateLimiter::new(MAX_FAILURES, FAILURE_WINDOW),
        }
    }

    /// Whether this address may try again now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.failures.check(ip).is_ok()
    }

    /// Checks the credentials (constant time for the user, argon2 for the password); counts a
    /// failure against the address.
    pub fn verify(&self, ip: IpAddr, user: &str, password: &str) -> bool {
        let user_ok: bool = user.as_bytes().ct_eq(self.user.as_bytes()).into();
        let hash = PasswordHash::new(&self.password_hash).expect("our own hash parses");
        let password_ok = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        let ok = user_ok && password_ok;
        if ok {
            self.failures.forget(ip);
        } else {
            self.failures.count(ip);
        }
        ok
    }
}

pub(super) fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn signed_cookie(
    key: &Key,
    name: &'static str,
    value: String,
    secure: bool,
    max_age: Duration,
) -> Cookie<'static> {
    let mut cookie = Cookie::new(name, value);
    cookie.set_path("/admin");
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_secure(secure);
    cookie.set_max_age(actix_web::cookie::time::Duration::seconds(
        max_age.as_secs() as i64,
    ));
    sign(key, cookie)
}

/// `cookie` with its value signed by `key` (readable back only through [`read_signed`]).
pub(super) fn sign(key: &Key, cookie: Cookie<'static>) -> Cookie<'static> {
    let name = cookie.name().to_owned();
    let mut jar = CookieJar::new();
    jar.signed_mut(key).add(cookie);
    jar.get(&name).expect("just added").clone()
}

/// The value of the signed cookie `name`, if its signature verifies.
pub(super) fn read_signed(req: &HttpRequest, key: &Key, name: &str) -> Option<String> {
    let cookie = req.cookie(name)?;
    let mut jar = CookieJar::new();
    jar.add_original(cookie);
    jar.signed(key).get(name).map(|c| c.value().to_owned())
}

/// A new session cookie for `user`.
pub fn session_cookie(key: &Key, user: &str, secure: bool) -> Cookie<'static> {
    let expires = chrono::Utc::now().timestamp() + SESSION_LIFE.as_secs() as i64;
    signed_cookie(
        key,
        SESSION_COOKIE,
        format!("{expires}|{}|{user}", random_token()),
        secure,
        SESSION_LIFE,
    )
}

/// The request's session, if its cookie verifies and has not expired.
pub fn session(req: &HttpRequest, key: &Key) -> Option<Session> {
    let value = read_signed(req, key, SESSION_COOKIE)?;
    let mut parts = value.splitn(3, '|');
    let expires: i64 = parts.next()?.parse().ok()?;
    let csrf = parts.next()?.to_owned();
    let user = parts.next()?.to_owned();
    (expires > chrono::Utc::now().timestamp()).then_some(Session { user, csrf })
}

/// The sign-in form's own CSRF token (before there is a session): a signed cookie and a field.
pub fn login_cookie(key: &Key, secure: bool) -> (Cookie<'static>, String) {
    let token = random_token();
    (
        signed_cookie(
            key,
            LOGIN_COOKIE,
            token.clone(),
            secure,
            Duration::from_secs(3600),
        ),
        token,
    )
}

pub fn login_token(req: &HttpRequest, key: &Key) -> Option<String> {
    read_signed(req, key, LOGIN_COOKIE)
}

/// Constant-time token comparison.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// An expired cookie that removes `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::new(name, "");
    cookie.set_path("/admin");
    cookie.make_removal();
    cookie
}
