//! Dashboard sessions over real HTTP on both databases: a session lives in the
//! database, so signing out, a new ADMIN_PASSWORD or an idle spell ends it whatever copy of the
//! cookie is replayed, and a cookie signed with the key from `app_keys` opens nothing on its own.
//! Sign-in tries are counted before the password is evaluated, and argon2 runs off the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::cookie::{Cookie, CookieJar, Key};
use diesel::prelude::*;
use kicc_checkout::db::schema::admin_sessions;

use crate::admin::PASSWORD;
use crate::helpers::{TestApp, TestDb, hidden_field};

/// A browser of its own: no cookie store (cookies are sent by hand), no redirects followed.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` pair a response sets for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_owned()
}

/// Signs in through `app`'s own client with `password`; the session cookie (`admin=…`) it got.
async fn sign_in(app: &TestApp, password: &str) -> String {
    let form = app.get("/admin/login").await.text().await.unwrap();
    let token = hidden_field(&form, "csrf").unwrap();
    let r = app
        .post_form(
            "/admin/login",
            &[
                ("csrf", &token),
                ("user", "admin"),
                ("password", password),
                ("next", "/admin"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "signing in with {password:?}");
    set_cookie(&r, "admin")
}

/// GET `path` of `app` sending only `cookie`, from another client (a replayed copy).
async fn replay(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    plain_client()
        .get(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// Whether the copy of `cookie` opens the dashboard home at `app` (else it is sent to sign in).
async fn opens_dashboard(app: &TestApp, cookie: &str) -> bool {
    let r = replay(app, "/admin", cookie).await;
    match r.status().as_u16() {
        200 => true,
        303 => {
            let location = r.headers()["location"].to_str().unwrap();
            assert!(location.starts_with("/admin/login?next="), "{location}");
            false
        }
        other => panic!("GET /admin answered {other}"),
    }
}

fn session_rows(app: &TestApp) -> i64 {
    let mut conn = app.db.get().unwrap();
    admin_sessions::table
        .count()
        .get_result(&mut *conn)
        .unwrap()
}

fn last_seen(app: &TestApp) -> Vec<chrono::NaiveDateTime> {
    let mut conn = app.db.get().unwrap();
    admin_sessions::table
        .select(admin_sessions::last_seen_at)
        .load(&mut *conn)
        .unwrap()
}

async fn app_with(test_db: TestDb, vars: &[(&'static str, &str)]) -> TestApp {
    let mut all = vec![("ADMIN_PASSWORD", PASSWORD)];
    all.extend_from_slice(vars);
    TestApp::spawn_with(test_db, &all).await
}

/// The sign-in form's cookie and token, for posting the form by hand.
async fn login_form(app: &TestApp) -> (String, String) {
    let r = plain_client()
        .get(format!("{}/admin/login", app.address))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&r, "admin_login");
    let token = hidden_field(&r.text().await.unwrap(), "csrf").unwrap();
    (cookie, token)
}

/// Posts the sign-in form by hand (optionally as forwarded for `client`); the status.
async fn post_login(
    address: &str,
    (cookie, token): &(String, String),
    password: &str,
    client: Option<String>,
) -> u16 {
    let mut request = plain_client()
        .post(format!("{address}/admin/login"))
        .header("cookie", cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("user", "admin"),
            ("password", password),
        ]);
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap().status().as_u16()
}

both_backends! {
    async fn after_sign_out_the_old_cookie_no_longer_opens_the_dashboard(test_db) {
        let app = app_with(test_db, &[]).await;
        let cookie = sign_in(&app, PASSWORD).await;
        assert!(opens_dashboard(&app, &cookie).await, "a copy works while signed in");
        let home = app.get("/admin").await.text().await.unwrap();
        let csrf = hidden_field(&home, "csrf").unwrap();
        let out = app.post_form("/admin/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status(), 303);
        // The copy, replayed by hand (a browser that ignored the removal, or a thief's).
        assert!(!opens_dashboard(&app, &cookie).await, "signed out, the copy opens nothing");
        assert_eq!(session_rows(&app), 0, "signing out deleted the session");
        let post = plain_client()
            .post(format!("{}/admin/logout", app.address))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 403, "nor does it carry a POST");
    }

    async fn a_restart_with_another_admin_password_ends_every_session(test_db) {
        let first = app_with(test_db, &[]).await;
        let cookie = sign_in(&first, PASSWORD).await;
        assert!(opens_dashboard(&first, &cookie).await);
        // Another instance with the same credentials on the same database accepts it: what
        // ends it below is the password, not the instance.
        let same = TestApp::spawn_beside(&first, &[("ADMIN_PASSWORD", PASSWORD)]).await;
        assert!(opens_dashboard(&same, &cookie).await, "instances share sessions");
        let changed = TestApp::spawn_beside(&first, &[("ADMIN_PASSWORD", "a brand new passphrase")]).await;
        assert!(!opens_dashboard(&changed, &cookie).await, "the old password's session is refused");
        assert_eq!(session_rows(&first), 0, "and deleted");
        // The new password signs in there.
        let new_cookie = sign_in(&changed, "a brand new passphrase").await;
        assert!(opens_dashboard(&changed, &new_cookie).await);
        // And the session is not just the cookie: only the fingerprint's HMAC is stored.
        let mut conn = changed.db.get().unwrap();
        let stored: Vec<(String, String)> = admin_sessions::table
            .select((admin_sessions::id_hash, admin_sessions::credential))
            .load(&mut *conn)
            .unwrap();
        let value = new_cookie.split_once('=').unwrap().1;
        for (id_hash, credential) in stored {
            assert!(!value.contains(&id_hash) && !credential.contains("passphrase"));
            assert_eq!((id_hash.len(), credential.len()), (64, 64));
        }
    }

    async fn a_cookie_signed_with_the_key_from_app_keys_but_without_a_session_row_is_refused(test_db) {
        let app = app_with(test_db, &[]).await;
        // The signing key, read from the database the way the app reads it.
        let key = {
            let mut conn = app.db.get().unwrap();
            let hex_key = kicc_checkout::db::app_keys::get_or_create(&mut conn, "cookie", || {
                unreachable!("the app made its key at start")
            })
            .unwrap();
            Key::from(&hex::decode(hex_key).unwrap())
        };
        let forge = |value: String| {
            let mut jar = CookieJar::new();
            jar.signed_mut(&key).add(Cookie::new("admin", value));
            let cookie = jar.get("admin").unwrap();
            format!("admin={}", cookie.value())
        };
        let far = chrono::Utc::now().timestamp() + 3600;
        let forged = [
            // The old cookie's own shape: expiry, CSRF token, user.
            forge(format!("{far}|0123456789abcdef0123456789abcdef|admin")),
            // The new shape: a random id, which no row is found for.
            forge(hex::encode([7u8; 32])),
        ];
        for cookie in &forged {
            assert!(!opens_dashboard(&app, cookie).await, "{cookie}");
            let post = plain_client()
                .post(format!("{}/admin/logout", app.address))
                .header("cookie", cookie)
                .form(&[("csrf", "0123456789abcdef0123456789abcdef")])
                .send()
                .await
                .unwrap();
            assert_eq!(post.status(), 403, "{cookie}");
        }
        // The replay itself works: a real session's cookie opens the dashboard the same way.
        let real = sign_in(&app, PASSWORD).await;
        assert!(opens_dashboard(&app, &real).await);
    }

    async fn a_session_left_idle_past_admin_session_idle_secs_ends(test_db) {
        let app = app_with(test_db, &[("ADMIN_SESSION_IDLE_SECS", "2")]).await;
        let cookie = sign_in(&app, PASSWORD).await;
        assert!(opens_dashboard(&app, &cookie).await, "fresh: open");
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        assert!(!opens_dashboard(&app, &cookie).await, "idle past the timeout: ended");
        assert_eq!(session_rows(&app), 0, "the ended session was deleted");
        // A new sign-in works again.
        let again = sign_in(&app, PASSWORD).await;
        assert!(opens_dashboard(&app, &again).await);
    }

    async fn reading_the_dashboard_does_not_write_the_session_on_every_request(test_db) {
        let app = app_with(test_db, &[]).await;
        let cookie = sign_in(&app, PASSWORD).await;
        let before = last_seen(&app);
        assert_eq!(before.len(), 1);
        for _ in 0..5 {
            assert!(opens_dashboard(&app, &cookie).await);
        }
        assert_eq!(last_seen(&app), before, "last_seen_at is written at most once a minute");
    }

    async fn twenty_parallel_wrong_sign_ins_from_one_address_evaluate_exactly_five_passwords(test_db) {
        let app = app_with(test_db, &[]).await;
        let form = Arc::new(login_form(&app).await);
        let tries = (0..20).map(|i| {
            let (address, form) = (app.address.clone(), form.clone());
            tokio::spawn(async move { post_login(&address, &form, &format!("guess {i}"), None).await })
        });
        let mut statuses: Vec<u16> = Vec::new();
        for t in tries.collect::<Vec<_>>() {
            statuses.push(t.await.unwrap());
        }
        let count = |code| statuses.iter().filter(|s| **s == code).count();
        assert_eq!((count(401), count(429)), (5, 15), "{statuses:?}");
        assert_eq!(app.state.admin.password_checks(), 5, "exactly five passwords evaluated");
        // The right password is refused too now, and is not evaluated.
        assert_eq!(post_login(&app.address, &form, PASSWORD, None).await, 429);
        assert_eq!(app.state.admin.password_checks(), 5);
    }
}

both_backends! {
    async fn healthz_is_answered_while_forty_sign_ins_run(test_db) {
        // Forty different clients (behind a trusted proxy), so every password is evaluated.
        let app = app_with(test_db, &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
        let form = Arc::new(login_form(&app).await);
        let answered = Arc::new(AtomicUsize::new(0));
        let tries: Vec<_> = (0..40)
            .map(|i| {
                let (address, form, answered) = (app.address.clone(), form.clone(), answered.clone());
                tokio::spawn(async move {
                    let status = post_login(&address, &form, &format!("guess {i}"), Some(format!("198.51.100.{i}"))).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    status
                })
            })
            .collect();
        // Once the burst is being evaluated, ask for /healthz on a connection of its own.
        while app.state.admin.password_checks() < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let health = plain_client().get(format!("{}/healthz", app.address)).send().await.unwrap();
        let answered_before_health = answered.load(Ordering::SeqCst);
        assert_eq!(health.status(), 200);
        for t in tries {
            assert_eq!(t.await.unwrap(), 401);
        }
        assert_eq!(app.state.admin.password_checks(), 40);
        // Answered amid the burst, not after it: the async workers were free. (With argon2 on
        // the workers, 36 to 40 of the sign-ins were answered first; off them, 0 to 2.)
        assert!(
            answered_before_health < 20,
            "/healthz waited for {answered_before_health} of the 40 sign-ins"
        );
    }
}
