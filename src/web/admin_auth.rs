//! Dashboard sign-in and sessions: `ADMIN_USER` / `ADMIN_PASSWORD` (argon2, evaluated on the
//! blocking pool), sessions kept on the server (`db::admin_sessions`) behind a signed cookie
//! (HttpOnly, SameSite=Strict, Secure over https) that carries only a random id, and a per-address
//! limit on password evaluations that takes its slot before the password is looked at.
//!
//! A session is valid while its row exists, it was opened under the credentials configured now,
//! it is younger than [`SESSION_LIFE`] and was used within `ADMIN_SESSION_IDLE_SECS`. Signing
//! out deletes the row, so a copy of the cookie opens nothing afterwards.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{NaiveDateTime, TimeDelta};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rate_limit::RateLimiter;
use crate::db::admin_sessions::{self, SessionRow};
use crate::db::{Db, DbError};

pub const SESSION_COOKIE: &str = "admin";
pub const LOGIN_COOKIE: &str = "admin_login";
/// A session ends this long after sign-in, used or not.
pub const SESSION_LIFE: Duration = Duration::from_secs(8 * 3600);
/// A session's `last_seen_at` is written at most this often (and at least twice per idle
/// timeout): reading the dashboard does not write on every request.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Password evaluations allowed per address (IPv6: per /64) and window. A slot is taken before
/// the password is evaluated and given back only by a successful sign-in, so this holds however
/// many tries arrive at once.
pub const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The `app_keys` entry keying the credential fingerprint and the password hash's salt.
const CREDENTIAL_KEY: &str = "admin_credential";

type HmacSha256 = Hmac<Sha256>;

pub struct AdminAuth {
    user: String,
    /// argon2 PHC string of `ADMIN_PASSWORD` (its salt derived from the `app_keys` secret).
    password_hash: Arc<str>,
    /// Fingerprint of the configured credentials; a session carrying another one is refused.
    credential: String,
    idle: Duration,
    /// Password evaluations per address.
    failures: RateLimiter,
    /// Password evaluations started since start ([`password_checks`](Self::password_checks)).
    checks: AtomicU64,
    /// argon2 takes ~19 MiB and a core for tens of milliseconds: at most this many at once, on
    /// the blocking pool, while the async workers keep answering.
    hashing: tokio::sync::Semaphore,
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// Every dashboard form carries it; a POST without it is refused.
    pub csrf: String,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInRefused {
    /// The address has used its evaluations for this window: nothing was evaluated.
    TooManyAttempts { wait: Duration },
    /// Wrong user or password.
    WrongCredentials,
}

/// What a session row is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Valid {
        touch: bool,
    },
    /// Idle too long, too old, or opened under other credentials: deleted and refused.
    Ended,
}

impl AdminAuth {
    /// The sign-in of `user` / `password` over the database's `app_keys` secret (made at first
    /// start, shared by every instance, so they all accept each other's sessions); the one
    /// argon2 hash runs on the blocking pool. `idle`: `ADMIN_SESSION_IDLE_SECS`.
    pub async fn load(
        db: &Db,
        user: &str,
        password: &str,
        idle: Duration,
    ) -> Result<Self, DbError> {
        let secret = db
            .run(|conn| {
                crate::db::app_keys::get_or_create(conn, CREDENTIAL_KEY, || {
                    hex::encode(rand::random::<[u8; 32]>())
                })
            })
            .await?;
        let (user, password) = (user.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || Self::new(&user, &password, secret.as_bytes(), idle))
            .await
            .map_err(|_| DbError::Cancelled)
    }

    /// [`load`](Self::load) with the secret given (runs argon2 on the calling thread).
    pub fn new(user: &str, password: &str, secret: &[u8], idle: Duration) -> Self {
        // The salt is derived from the secret, so every instance (and every restart) with the
        // same password computes the same hash, and so the same fingerprint.
        let salt_bytes = mac(secret, &[b"argon2 salt"]);
        let salt =
            SaltString::encode_b64(&salt_bytes[..argon2::password_hash::Salt::RECOMMENDED_LENGTH])
                .expect("16 bytes encode as a salt");
        let password_hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 hashes")
            .to_string();
        // The fingerprint is an HMAC of the user and the password's argon2 hash, keyed with a
        // secret from `app_keys`: never the password, never a fast unsalted hash of it (a reader
        // of both app_keys and admin_sessions pays an argon2 evaluation per guess). It is not a
        // credential either: app_keys also yields the cookie signing key, but a signed cookie
        // opens nothing without its session's row, which is found by the SHA-256 of a random
        // id that is stored nowhere, and a reader cannot write rows. So reading app_keys no
        // longer mints a session; changing ADMIN_PASSWORD (or ADMIN_USER) and restarting
        // changes the fingerprint, and every session opened before is refused and purged.
        let credential = hex::encode(mac(
            secret,
            &[
                b"admin credential",
                user.as_bytes(),
                password_hash.as_bytes(),
            ],
        ));
        Self {
            user: user.to_owned(),
            password_hash: password_hash.into(),
            credential,
            idle,
            failures: RateLimiter::new(MAX_FAILURES, FAILURE_WINDOW),
            checks: AtomicU64::new(0),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8)),
            ),
        }
    }

    /// How many passwords have been evaluated since start (refused-by-limit tries are not).
    pub fn password_checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Checks a sign-in from `ip`. The address's slot is taken first (counted and checked in
    /// one step), so at most [`MAX_FAILURES`] passwords are evaluated per address and window
    /// whatever the concurrency; a success gives the address its slots back. argon2 runs on
    /// the blocking pool; the user is compared in constant time.
    pub async fn sign_in(
        &self,
        ip: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(), SignInRefused> {
        self.failures
            .take(ip)
            .map_err(|wait| SignInRefused::TooManyAttempts { wait })?;
        self.checks.fetch_add(1, Ordering::Relaxed);
        let password_ok = {
            // Never closed: acquiring only waits.
            let _permit = self.hashing.acquire().await.ok();
            let hash = self.password_hash.clone();
            let password = password.to_owned();
            actix_web::web::block(move || {
                PasswordHash::new(&hash).is_ok_and(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false)
        };
        let user_ok: bool = user.as_bytes().ct_eq(self.user.as_bytes()).into();
        if user_ok && password_ok {
            self.failures.forget(ip);
            Ok(())
        } else {
            Err(SignInRefused::WrongCredentials)
        }
    }

    /// Opens a session for `user` (after [`sign_in`](Self::sign_in)): its row, and the cookie
    /// for the browser. Sessions that can no longer be used are purged first.
    pub async fn open_session(
        &self,
        db: &Db,
        key: &Key,
        user: &str,
        secure: bool,
    ) -> Result<Cookie<'static>, DbError> {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = crate::db::now();
        let row = SessionRow {
            id_hash: id_hash(&id),
            user_name: user.to_owned(),
            csrf: hex::encode(rand::random::<[u8; 16]>()),
            credential: self.credential.clone(),
            created_at: now,
            last_seen_at: now,
        };
        let (idle_before, opened_before) = (now - delta(self.idle), now - delta(SESSION_LIFE));
        let credential = self.credential.clone();
        db.write(move |conn| {
            let purged = admin_sessions::purge(conn, idle_before, opened_before, &credential)?;
            if purged > 0 {
                log::info!("dashboard: {purged} ended session(s) purged");
            }
            admin_sessions::insert(conn, &row)
        })
        .await?;
        Ok(signed_cookie(key, SESSION_COOKIE, id, secure, SESSION_LIFE))
    }

    /// The request's session: its cookie verifies and names a row that is still valid (see the
    /// module). A row found ended is deleted. `last_seen_at` is written at most once a minute.
    pub async fn session(
        &self,
        req: &HttpRequest,
        key: &Key,
        db: &Db,
    ) -> Result<Option<Session>, DbError> {
        let Some(id_hash) = session_id_hash(req, key) else {
            return Ok(None);
        };
        let (credential, idle) = (self.credential.clone(), self.idle);
        db.run(move |conn| {
            let Some(row) = admin_sessions::find(conn, &id_hash)? else {
                return Ok(None);
            };
            let now = crate::db::now();
            match verdict(&row, now, &credential, idle) {
                Verdict::Ended => {
                    admin_sessions::delete(conn, &id_hash)?;
                    Ok(None)
                }
                Verdict::Valid { touch } => {
                    if touch {
                        admin_sessions::touch(conn, &id_hash, now)?;
                    }
                    Ok(Some(Session {
                        user: row.user_name,
                        csrf: row.csrf,
                    }))
                }
            }
        })
        .await
    }

    /// Ends the request's session (sign-out): its row is deleted.
    pub async fn end_session(&self, req: &HttpRequest, key: &Key, db: &Db) -> Result<(), DbError> {
        if let Some(id_hash) = session_id_hash(req, key) {
            db.write(move |conn| admin_sessions::delete(conn, &id_hash))
                .await?;
        }
        Ok(())
    }
}

/// HMAC-SHA256 under `key` of `parts`, each length-prefixed (unambiguous).
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// What the database knows a session by: the hex SHA-256 of its cookie's id.
fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The hash of the id in the request's session cookie, if the cookie verifies and holds an id
/// of ours (64 hex digits).
fn session_id_hash(req: &HttpRequest, key: &Key) -> Option<String> {
    read_signed(req, key, SESSION_COOKIE)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|id| id_hash(&id))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A row's worth at `now`, under the configured `credential` and idle timeout.
fn verdict(row: &SessionRow, now: NaiveDateTime, credential: &str, idle: Duration) -> Verdict {
    let same_credential: bool = row
        .credential
        .as_bytes()
        .ct_eq(credential.as_bytes())
        .into();
    let idle_for = now - row.last_seen_at;
    if !same_credential || now - row.created_at >= delta(SESSION_LIFE) || idle_for >= delta(idle) {
        return Verdict::Ended;
    }
    // Written at most once a minute, and often enough that a session in use does not lapse.
    Verdict::Valid {
        touch: idle_for >= delta(TOUCH_EVERY.min(idle / 2)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(credential: &str, created_at: NaiveDateTime, last_seen_at: NaiveDateTime) -> SessionRow {
        SessionRow {
            id_hash: id_hash(&"ab".repeat(32)),
            user_name: "admin".into(),
            csrf: "token".into(),
            credential: credential.into(),
            created_at,
            last_seen_at,
        }
    }

    #[test]
    fn a_session_ends_when_idle_too_old_or_under_other_credentials() {
        let now = crate::db::now();
        let idle = Duration::from_secs(1800);
        let minutes = |m| TimeDelta::minutes(m);
        let verdict_of = |credential, created_ago, seen_ago| {
            verdict(
                &row(
                    credential,
                    now - minutes(created_ago),
                    now - minutes(seen_ago),
                ),
                now,
                "current",
                idle,
            )
        };
        assert_eq!(verdict_of("current", 5, 0), Verdict::Valid { touch: false });
        assert_eq!(
            verdict_of("current", 5, 2),
            Verdict::Valid { touch: true },
            "seen over a minute ago"
        );
        assert_eq!(
            verdict_of("current", 60, 30),
            Verdict::Ended,
            "idle for the whole timeout"
        );
        assert_eq!(
            verdict_of("current", 8 * 60, 0),
            Verdict::Ended,
            "past the absolute life"
        );
        assert_eq!(
            verdict_of("other", 5, 0),
            Verdict::Ended,
            "opened under other credentials"
        );
        // A short idle timeout is touched often enough to stay alive while used.
        let short = verdict(
            &row("current", now, now - TimeDelta::seconds(1)),
            now,
            "current",
            Duration::from_secs(2),
        );
        assert_eq!(short, Verdict::Valid { touch: true });
    }

    #[test]
    fn the_credential_fingerprint_follows_the_password_and_hides_it() {
        let idle = Duration::from_secs(60);
        let a = AdminAuth::new("admin", "correct horse", b"secret one", idle);
        let again = AdminAuth::new("admin", "correct horse", b"secret one", idle);
        let other_password = AdminAuth::new("admin", "battery staple", b"secret one", idle);
        let other_user = AdminAuth::new("root", "correct horse", b"secret one", idle);
        assert_eq!(
            a.credential, again.credential,
            "restarts and instances agree"
        );
        assert_ne!(a.credential, other_password.credential);
        assert_ne!(a.credential, other_user.credential);
        assert!(!a.credential.contains("horse") && a.credential.len() == 64);
        assert_ne!(
            a.credential,
            hex::encode(Sha256::digest(b"correct horse")),
            "not a plain hash of the password"
        );
    }

    #[test]
    fn only_ids_of_ours_are_looked_up() {
        let key = Key::generate();
        let request = |value: &str| {
            let cookie = sign(&key, Cookie::new(SESSION_COOKIE, value.to_owned()));
            actix_web::test::TestRequest::default()
                .cookie(cookie)
                .to_http_request()
        };
        let id = "0f".repeat(32);
        assert_eq!(session_id_hash(&request(&id), &key), Some(id_hash(&id)));
        assert_eq!(
            session_id_hash(&request("1700000000|token|admin"), &key),
            None
        );
        assert_eq!(session_id_hash(&request(&"zz".repeat(32)), &key), None);
        let unsigned = actix_web::test::TestRequest::default()
            .cookie(Cookie::new(SESSION_COOKIE, id.clone()))
            .to_http_request();
        assert_eq!(
            session_id_hash(&unsigned, &key),
            None,
            "the cookie must be signed"
        );
    }
}
