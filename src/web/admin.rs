//! The merchant dashboard (`/admin`): sign-in, home (totals, needs-attention, daily chart),
//! the order list (filters, search, keyset pages, CSV), an order's whole story with cancel and
//! re-check, and unmatched notifications. Every route needs a session; every POST its CSRF token.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use serde::Deserialize;

use super::AppState;
use super::admin_auth::{self, Session, SignInRefused};
use super::client_ip;
use super::error::WebError;
use crate::checkout::MerchantError;
use crate::db::admin::{self, Cursor, OrderFilter};
use crate::db::{gateway_calls, orders, webhook_deliveries};
use crate::domain::{Currency, Money, Order};

fn see_other(location: impl Into<String>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.into()))
        .finish()
}

/// The session, or the answer for a request without one: sign-in for pages, 403 for actions.
/// The cookie alone is not enough: its session's row must exist and still be valid.
async fn require(req: &HttpRequest, state: &AppState) -> Result<Session, Box<HttpResponse>> {
    let session = state
        .admin
        .session(req, &state.cookie_key, &state.db)
        .await
        .map_err(|e| Box::new(actix_web::ResponseError::error_response(&WebError::from(e))))?;
    match session {
        Some(session) => Ok(session),
        None if req.method() == actix_web::http::Method::GET => {
            let next = url::form_urlencoded::byte_serialize(req.uri().to_string().as_bytes())
                .collect::<String>();
            Err(Box::new(see_other(format!("/admin/login?next={next}"))))
        }
        None => Err(Box::new(forbidden(state, "Sign in first."))),
    }
}

/// A 403 for a person: the HTML error page.
fn forbidden(state: &AppState, message: &str) -> HttpResponse {
    super::error::render_error_page(
        state,
        actix_web::http::StatusCode::FORBIDDEN,
        "Not allowed",
        message,
    )
}

/// A dashboard action: signed in, and the form's CSRF token is the session's.
async fn authorized_post(
    req: &HttpRequest,
    state: &AppState,
    token: &str,
) -> Result<Session, Box<HttpResponse>> {
    let session = require(req, state).await?;
    check_csrf(state, &session, token)?;
    Ok(session)
}

/// A POST's CSRF token must be the session's.
fn check_csrf(state: &AppState, session: &Session, token: &str) -> Result<(), Box<HttpResponse>> {
    if admin_auth::same_token(token, &session.csrf) {
        Ok(())
    } else {
        Err(Box::new(forbidden(
            state,
            "The form expired or did not come from this dashboard (CSRF token missing or wrong).",
        )))
    }
}

pub struct AdminLayout {
    pub title: String,
    pub user: String,
    pub csrf: String,
    pub sandbox: bool,
    pub api_base: String,
}

fn layout(state: &AppState, session: &Session, title: impl Into<String>) -> AdminLayout {
    AdminLayout {
        title: title.into(),
        user: session.user.clone(),
        csrf: session.csrf.clone(),
        sandbox: state.config.is_sandbox(),
        api_base: match &state.config.gateway {
            crate::config::GatewayMode::Live { api_base } => api_base.clone(),
            crate::config::GatewayMode::Sandbox => format!("{}/sandbox", state.base_url),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    token: String,
    next: String,
    error: Option<String>,
    sandbox: bool,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only paths inside the dashboard are followed after sign-in.
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/admin") && !n.starts_with("//"))
        .unwrap_or("/admin")
        .to_owned()
}

fn login_page(
    state: &AppState,
    next: String,
    error: Option<String>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    let (cookie, token) = admin_auth::login_cookie(&state.cookie_key, state.https());
    let mut response = super::render(
        &LoginPage {
            token,
            next,
            error,
            sandbox: state.config.is_sandbox(),
        },
        status,
    );
    let _ = response.add_cookie(&cookie);
    response
}

pub async fn login_form(state: web::Data<AppState>, query: web::Query<NextQuery>) -> HttpResponse {
    login_page(
        &state,
        safe_next(query.next.as_deref()),
        None,
        actix_web::http::StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let next = safe_next(Some(&form.next));
    let expected = admin_auth::login_token(&req, &state.cookie_key).unwrap_or_default();
    if !admin_auth::same_token(&form.csrf, &expected) {
        return forbidden(
            &state,
            "The sign-in form expired: reload it and try again (CSRF token missing or wrong).",
        );
    }
    let ip = client_ip::of_request(&req, &state.config.trusted_proxies);
    match state.admin.sign_in(ip, &form.user, &form.password).await {
        Ok(()) => {}
        Err(SignInRefused::TooManyAttempts { wait }) => {
            log::warn!("admin sign-in from {ip}: too many attempts");
            let minutes = wait.as_secs().div_ceil(60).max(1);
            return login_page(
                &state,
                next,
                Some(format!(
                    "Too many failed attempts. Wait {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                )),
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(SignInRefused::WrongCredentials) => {
            log::warn!("admin sign-in from {ip}: wrong user or password");
            return login_page(
                &state,
                next,
                Some("Wrong user or password.".into()),
                actix_web::http::StatusCode::UNAUTHORIZED,
            );
        }
    }
    let cookie = match state
        .admin
        .open_session(&state.db, &state.cookie_key, &form.user, state.https())
        .await
    {
        Ok(cookie) => cookie,
        Err(e) => return actix_web::ResponseError::error_response(&WebError::from(e)),
    };
    let mut response = see_other(next);
    let _ = response.add_cookie(&cookie);
    let _ = response.add_removal_cookie(&admin_auth::removal(admin_auth::LOGIN_COOKIE));
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if let Err(r) = authorized_post(&req, &state, &form.csrf).await {
        return *r;
    }
    // The row goes: a copy of the cookie (another tab, a stolen one) opens nothing after this.
    if let Err(e) = state
        .admin
        .end_session(&req, &state.cookie_key, &state.db)
        .await
    {
        return actix_web::ResponseError::error_response(&WebError::from(e));
    }
    let mut response = see_other("/admin/login");
    let _ = response.add_removal_cookie(&admin_auth::removal(admin_auth::SESSION_COOKIE));
    response
}

// ---------------------------------------------------------------------------------------------
// Home

pub struct Total {
    pub label: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "admin/home.html")]
struct HomePage {
    layout: AdminLayout,
    today_paid: Vec<Total>,
    month_paid: Vec<Total>,
    month_cancelled: Vec<Total>,
    today_count: i64,
    month_count: i64,
    conversion: String,
    needs_attention: i64,
    chart: String,
}

fn totals(rows: &[admin::CurrencyTotal]) -> Vec<Total> {
    rows.iter()
        .filter_map(|r| {
            let currency: Currency = r.currency.parse().ok()?;
            Some(Total {
                label: format!("{} ({} orders)", currency.code(), r.count),
                value: Money::from_minor(r.total, currency).ok()?.to_string(),
            })
        })
        .collect()
}

/// A bar chart of daily paid totals (KRW; USD converted nowhere: drawn only when alone).
fn chart(days: &[admin::DailyTotal], since: NaiveDate) -> String {
    let currency = if days.iter().any(|d| d.currency == "KRW") {
        "KRW"
    } else {
        "USD"
    };
    let values: Vec<(NaiveDate, i64)> = (0..30)
        .map(|i| {
            let day = since + TimeDelta::days(i);
            let key = day.format("%Y-%m-%d").to_string();
            (
                day,
                days.iter()
                    .filter(|d| d.day == key && d.currency == currency)
                    .map(|d| d.total)
                    .sum(),
            )
        })
        .collect();
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let (width, height, bar) = (600, 160, 18);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {}" role="img" aria-label="Paid per day, last 30 days ({currency})" class="chart">"#,
        height + 24
    );
    for (i, (day, value)) in values.iter().enumerate() {
        let h = (*value as f64 / max as f64 * height as f64).round() as i64;
        let x = i as i64 * (bar + 2);
        let money = Money::from_minor(
            *value,
            if currency == "KRW" {
                Currency::Krw
            } else {
                Currency::Usd
            },
        );
        let label = money.map(|m| m.to_string()).unwrap_or_default();
        svg.push_str(&format!(
            r#"<rect x="{x}" y="{}" width="{bar}" height="{}" class="bar"><title>{} — {label}</title></rect>"#,
            height - h,
            h.max(1),
            day.format("%m-%d")
        ));
        if i % 5 == 0 {
            svg.push_str(&format!(
                r#"<text x="{x}" y="{}" class="axis">{}</text>"#,
                height + 16,
                day.format("%m-%d")
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

pub async fn home(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, WebError> {
    let session = match require(&req, &state).await {
        Ok(s) => s,
        Err(r) => return Ok(*r),
    };
    let now = crate::db::now();
    let today = now.date().and_hms_opt(0, 0, 0).unwrap_or(now);
    let month = today - TimeDelta::days(29);
    let stats = state
        .db
        .run(move |conn| {
            Ok((
                admin::paid_since(conn, today)?,
                admin::paid_since(conn, month)?,
                admin::cancelled_since(conn, month)?,
                admin::created_since(conn, month)?,
                admin::needing_attention(conn)?,
                admin::daily_paid(conn, month)?,
            ))
        })
        .await?;
    let (today_paid, month_paid, month_cancelled, created, attention, daily) = stats;
    let month_count: i64 = month_paid.iter().map(|t| t.count).sum();
    let page = HomePage {
        layout: layout(&state, &session, "Dashboard"),
        today_count: today_paid.iter().map(|t| t.count).sum(),
        today_paid: totals(&today_paid),
        month_paid: totals(&month_paid),
        month_cancelled: totals(&month_cancelled),
        month_count,
        conversion: if created == 0 {
            "—".into()
        } else {
            format!(
                "{:.1}% ({month_count} of {created})",
                month_count as f64 * 100.0 / created as f64
            )
        },
        needs_attention: attention,
        chart: chart(&daily, month.date()),
    };
    Ok(super::render(&page, actix_web::http::StatusCode::OK))
}

// ---------------------------------------------------------------------------------------------
// Orders

#[derive(Debug, Default, Deserialize, Clone)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    q: String,
    /// `oldest` for oldest first; newest first otherwise.
    #[serde(default)]
    sort: String,
    #[serde(default)]
    before: String,
}

impl ListQuery {
    fn filter(&self) -> OrderFilter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let day = |s: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        };
        OrderFilter {
            status: some(&self.status),
            pay_method: some(&self.method),
            currency: some(&self.currency),
            from: day(&self.from),
            to: day(&self.to).map(|d: NaiveDateTime| d + TimeDelta::days(1)),
            query: some(&self.q),
            oldest_first: self.sort == "oldest",
        }
    }

    /// The query string without the cursor (the CSV link, the next page's base).
    fn without_cursor(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &self.status)
            .append_pair("method", &self.method)
            .append_pair("currency", &self.currency)
            .append_pair("from", &self.from)
            .append_pair("to", &self.to)
            .append_pair("q", &self.q)
            .append_pair("sort", &self.sort)
            .finish()
    }
}

pub struct OrderRow {
    pub shop_order_no: String,
    pub created: String,
    pub status: String,
    pub method: String,
    pub customer: String,
    pub amount: String,
    pub cancelled: String,
    pub pg_cno: String,
}

impl From<&Order> for OrderRow {
    fn from(o: &Order) -> Self {
        Self {
            shop_order_no: o.shop_order_no.to_string(),
            created: o.created_at.format("%Y-%m-%d %H:%M").to_string(),
            status: o.status.as_str().to_owned(),
            method: o.pay_method.label().to_owned(),
            customer: format!("{} <{}>", o.customer_name, o.customer_mail),
            amount: o.amount.to_string(),
            cancelled: if o.cancelled.is_zero() {
                String::new()
            } else {
                o.cancelled.to_string()
            },
            pg_cno: o.pg_cno.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
struct OrdersPage {
    layout: AdminLayout,
    query: ListQuery,
    rows: Vec<OrderRow>,
    next: Option<String>,
    base_query: String,
    statuses: Vec<&'static str>,
}

pub async fn orders(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    let session = match require(&req, &state).await {
        Ok(s) => s,
        Err(r) => return Ok(*r),
    };
    let query = query.into_inner();
    let (filter, before) = (query.filter(), Cursor::decode(&query.before));
    let (page, next) = state
        .db
        .run(move |conn| admin::list(conn, &filter, before, 50))
        .await?;
    let base_query = query.without_cursor();
    let page = OrdersPage {
        layout: layout(&state, &session, "Orders"),
        rows: page.iter().map(OrderRow::from).collect(),
        next: next.map(|c| format!("/admin/orders?{base_query}&before={}", c.encode())),
        base_query,
        query,
        statuses: crate::domain::OrderStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect(),
    };
    Ok(super::render(&page, actix_web::http::StatusCode::OK))
}

/// `GET /admin/orders.csv`: the current filter, streamed page by page.
pub async fn orders_csv(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    if let Err(r) = require(&req, &state).await {
        return *r;
    }
    let filter = query.filter();
    let db = state.db.clone();
    let header_row = csv_line(&[
        "shopOrderNo",
        "createdAt",
        "status",
        "payMethod",
        "currency",
        "amount",
        "cancelledAmount",
        "pgCno",
        "customerName",
        "customerMail",
    ]);
    let stream = futures_util::stream::unfold(
        (Some(header_row), None::<Cursor>, false),
        move |(header, cursor, done)| {
            let (db, filter) = (db.clone(), filter.clone());
            async move {
                if let Some(header) = header {
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from(header)),
                        (None, cursor, false),
                    ));
                }
                if done {
                    return None;
                }
                let (page, next) = db
                    .run(move |conn| admin::page_for_export(conn, &filter, cursor))
                    .await
                    .ok()?;
                if page.is_empty() {
                    return None;
                }
                let mut chunk = String::new();
                for o in &page {
                    chunk.push_str(&csv_line(&[
                        o.shop_order_no.as_str(),
                        &o.created_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
                        o.status.as_str(),
                        o.pay_method.as_str(),
                        o.amount.currency().code(),
                        &o.amount.format_plain().replace(',', ""),
                        &o.cancelled.format_plain().replace(',', ""),
                        o.pg_cno.as_deref().unwrap_or_default(),
                        &o.customer_name,
                        &o.customer_mail,
                    ]));
                }
                let finished = next.is_none();
                Some((Ok(web::Bytes::from(chunk)), (None, next, finished)))
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"orders.csv\"",
        ))
        .streaming(stream)
}

/// One CSV record (RFC 4180 quoting by the csv crate), every cell made inert for spreadsheets.
fn csv_line(fields: &[&str]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(fields.iter().map(|f| csv_cell(f)))
        .expect("CSV to memory");
    String::from_utf8(writer.into_inner().expect("CSV to memory")).expect("UTF-8 in, UTF-8 out")
}

/// A cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab or CR first: a
/// customer may call themselves `=HYPERLINK(…)`) gets a leading `'`, as OWASP advises for
/// CSV injection. Our own cells (dates, codes, non-negative amounts) never start so.
fn csv_cell(field: &str) -> std::borrow::Cow<'_, [u8]> {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}").into_bytes().into()
    } else {
        field.as_bytes().into()
    }
}

pub struct TimelineItem {
    pub at: String,
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin/order.html")]
struct OrderDetailPage {
    layout: AdminLayout,
    order: OrderRow,
    goods: String,
    lines: Vec<(String, i32, String)>,
    customer: Vec<(&'static str, String)>,
    remaining: String,
    remaining_plain: String,
    approval: Vec<(&'static str, String)>,
    timeline: Vec<TimelineItem>,
    can_cancel: bool,
    can_recheck: bool,
    flash: Option<String>,
}

#[derive(Deserialize)]
pub struct FlashQuery {
    flash: Option<String>,
}

pub async fn order(
    state: web::Data<AppState>,
    req: HttpRequest,
    no: web::Path<String>,
    query: web::Query<FlashQuery>,
) -> Result<HttpResponse, WebError> {
    let session = match require(&req, &state).await {
        Ok(s) => s,
        Err(r) => return Ok(*r),
    };
    let order = super::checkout::load_order(&state, &no).await?;
    let o = order.clone();
    let (lines, events, calls, deliveries) = state
        .db
        .run(move |conn| {
            Ok((
                orders::lines(conn, &o)?,
                orders::timeline(conn, o.id)?,
                gateway_calls::for_order(conn, o.id)?,
                webhook_deliveries::for_order(conn, o.id)?,
            ))
        })
        .await?;
    // One timeline: transitions and notes, every gateway call, every notification, in time order.
    let mut timeline: Vec<(NaiveDateTime, TimelineItem)> = Vec::new();
    for e in events {
        let title = match (e.from_status, e.to_status) {
            (Some(f), Some(t)) => format!("{} → {}", f, t),
            (None, Some(t)) => format!("→ {t}"),
            _ => e.event.replace('_', " "),
        };
        timeline.push((
            e.created_at,
            TimelineItem {
                at: String::new(),
                kind: if e.to_status.is_some() {
                    "transition"
                } else {
                    "note"
                },
                title,
                detail: format!("{}: {}", e.event, e.cause),
            },
        ));
    }
    for c in calls {
        let title = format!(
            "KICC {} → {}{}",
            c.api,
            c.outcome.clone().unwrap_or_else(|| "no answer".into()),
            c.latency_ms
                .map(|ms| format!(" in {ms} ms"))
                .unwrap_or_default()
        );
        let detail = format!(
            "key {} · request {} · response {}",
            c.shop_transaction_id,
            c.request_body,
            c.response_body.clone().unwrap_or_else(|| "—".into())
        );
        timeline.push((
            c.requested_at,
            TimelineItem {
                at: String::new(),
                kind: "call",
                title,
                detail,
            },
        ));
    }
    for d in deliveries {
        let title = format!(
            "notification {} from {} → {} (ack {})",
            d.kind,
            d.source_ip,
            d.outcome.clone().unwrap_or_default(),
            d.ack_res_cd.clone().unwrap_or_default()
        );
        timeline.push((
            d.received_at,
            TimelineItem {
                at: String::new(),
                kind: "webhook",
                title,
                detail: d.body,
            },
        ));
    }
    timeline.sort_by_key(|(at, _)| *at);
    let timeline = timeline
        .into_iter()
        .map(|(at, mut item)| {
            item.at = at.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
            item
        })
        .collect();
    let page = OrderDetailPage {
        layout: layout(&state, &session, format!("Order {}", order.shop_order_no)),
        goods: order.goods_name.clone(),
        lines: lines
            .iter()
            .map(|l| (l.name.clone(), l.quantity, l.line_total.to_string()))
            .collect(),
        customer: vec![
            ("Name", order.customer_name.clone()),
            ("Email", order.customer_mail.clone()),
            ("Phone", order.customer_contact_no.clone()),
            ("Address", order.customer_addr.clone()),
            ("KICC customer id", order.customer_id.clone()),
        ],
        remaining: order.remaining().to_string(),
        remaining_plain: order.remaining().format_plain().replace(',', ""),
        approval: [
            ("pgCno", order.pg_cno.clone()),
            ("Approval number", order.approval_no.clone()),
            ("Approval date", order.approval_date.clone()),
            ("Transaction date", order.transaction_date.clone()),
            ("KICC status", order.kicc_status_code.clone()),
            (
                "Trade type",
                order.trade_type.map(|t| t.as_str().to_owned()),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect(),
        can_cancel: matches!(
            order.status,
            crate::domain::OrderStatus::Paid | crate::domain::OrderStatus::PartiallyCancelled
        ),
        can_recheck: order.pay_method == crate::domain::PayMethod::Wechat && order.pg_cno.is_some(),
        flash: query.into_inner().flash,
        order: OrderRow::from(&order),
        timeline,
    };
    Ok(super::render(&page, actix_web::http::StatusCode::OK))
}

#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    csrf: String,
    /// Empty: all that remains. Else an amount in the order's currency ("1,000", "12.03").
    #[serde(default)]
    amount: String,
}

fn flash_to(no: &str, message: &str) -> HttpResponse {
    let message = url::form_urlencoded::byte_serialize(message.as_bytes()).collect::<String>();
    see_other(format!("/admin/orders/{no}?flash={message}"))
}

/// Back to the order page with what an action did (`done`) or why it did nothing (`refused`).
fn action_result(
    no: &str,
    result: Result<String, MerchantError>,
    refused: &str,
) -> Result<HttpResponse, WebError> {
    match result {
        Ok(message) => Ok(flash_to(no, &message)),
        Err(MerchantError::Refused(why)) => Ok(flash_to(no, &format!("{refused}: {why}"))),
        Err(MerchantError::NotFound) => Err(WebError::NotFound {
            what: "order".into(),
        }),
        Err(MerchantError::Db(e)) => Err(e.into()),
    }
}

pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    no: web::Path<String>,
    form: web::Form<CancelForm>,
) -> Result<HttpResponse, WebError> {
    if let Err(r) = authorized_post(&req, &state, &form.csrf).await {
        return Ok(*r);
    }
    let order = super::checkout::load_order(&state, &no).await?;
    let amount = match form.amount.trim() {
        "" => None,
        text => match Money::parse_major(text, order.amount.currency()) {
            Ok(m) => Some(m.minor()),
            Err(e) => return Ok(flash_to(&no, &format!("Not cancelled: {e}"))),
        },
    };
    let result = state
        .checkout
        .merchant_cancel(&order.shop_order_no, amount)
        .await;
    action_result(
        &no,
        result.map(|after| format!("Cancel sent: the order is {}", after.status)),
        "Not cancelled",
    )
}

pub async fn sync(
    state: web::Data<AppState>,
    req: HttpRequest,
    no: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    if let Err(r) = authorized_post(&req, &state, &form.csrf).await {
        return Ok(*r);
    }
    let order = super::checkout::load_order(&state, &no).await?;
    let result = state.checkout.merchant_recheck(&order.shop_order_no).await;
    action_result(
        &no,
        result.map(|summary| format!("Re-checked: {summary}")),
        "Not re-checked",
    )
}

#[derive(Template)]
#[template(path = "admin/unmatched.html")]
struct UnmatchedPage {
    layout: AdminLayout,
    rows: Vec<webhook_deliveries::Delivery>,
}

pub async fn unmatched(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, WebError> {
    let session = match require(&req, &state).await {
        Ok(s) => s,
        Err(r) => return Ok(*r),
    };
    let rows = state
        .db
        .run(|conn| webhook_deliveries::unmatched(conn, 200))
        .await?;
    Ok(super::render(
        &UnmatchedPage {
            layout: layout(&state, &session, "Unmatched notifications"),
            rows,
        },
        actix_web::http::StatusCode::OK,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_made_text() {
        assert_eq!(
            csv_line(&[
                "=1+2", "+82", "-foo", "@SUM(A1)", "\tx", "\rx", "Kim", "a=b", "1200"
            ]),
            "'=1+2,'+82,'-foo,'@SUM(A1),'\tx,\"'\rx\",Kim,a=b,1200\n"
        );
        assert_eq!(
            csv_line(&["=HYPERLINK(\"http://x\",\"y\")"]),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\n"
        );
    }
}
