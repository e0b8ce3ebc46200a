//! The web pages served by the daemon (issue 7): sign-in, control room, security review.
//! Server-rendered HTML (maud), one style sheet and one small script served from routes
//! (so the Content-Security-Policy allows no inline script or style), live updates by SSE.
//!
//! Pages own no business logic: they call the API's handlers (`api::facility`,
//! `api::alarms`, `api::incidents`, `api::access`, `api::visits`) and render their DTOs, and
//! every write from a form goes through the same handler as the API write, behind the same
//! guard (`api::guard` with `Guard::Session` rows of `api::matrix`), so it is audited the
//! same way. See `docs/web.md`.

mod control;
pub mod i18n;
mod security;
pub mod session;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest as _, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use self::i18n::{L, LANG_COOKIE, Lang};
use self::session::{SESSION_COOKIE, SESSION_TTL, SIGNIN_COOKIE, WebSession, redirect};
use crate::api::audit::{AuditEntry, source_text};
use crate::api::auth::Role;
use crate::api::error::{ApiError, ErrorBody, ErrorCode};
use crate::api::{ApiState, AuditObject, MAX_BODY_BYTES};

const CSS: &str = include_str!("static/dcguard.css");
const JS: &str = include_str!("static/dcguard.js");

/// The Content-Security-Policy of every page: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The page routes (the guard and the deadline are added by `api::router`).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/static/dcguard.css", get(css))
        .route("/static/dcguard.js", get(js))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/", get(start))
        .route("/control-room", get(control::page))
        .route("/control-room/live", get(control::live))
        .route("/control-room/events", get(control::events))
        .route("/control-room/acknowledge", post(control::acknowledge))
        .route("/control-room/shelve", post(control::shelve))
        .route("/security", get(security::page))
        .route("/security/visits/{ticket}", get(security::visit))
        .route("/security/findings/{id}/review", post(security::review))
        .route("/security/events.csv", get(security::export))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The security headers of every page and asset.
pub fn secure_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// An HTML answer with the security headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    secure_headers(&mut response);
    response
}

/// A page answer; sets the language cookie when the query chose the language.
fn page_response(lang: PageLang, markup: Markup) -> Response {
    let mut response = html_response(StatusCode::OK, markup);
    if lang.chosen {
        response.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(
                LANG_COOKIE,
                lang.lang.code(),
                Duration::from_secs(365 * 86400),
                false,
            ),
        );
    }
    response
}

/// An error page with the API error's status and message; keeps its code for the audit
/// record.
pub fn error_page(lang: Lang, error: &ApiError) -> Response {
    let message = crate::api::auth::redact(&error.message).into_owned();
    let markup = layout(
        lang,
        None,
        lang.t(L::Error),
        "",
        html! {
            section.panel.error {
                h2 { (lang.t(L::Error)) " " (error.status.as_u16()) }
                p.message { (message) }
                p { a href="/" { (lang.t(L::Back)) } }
            }
        },
    );
    let mut response = html_response(error.status, markup);
    response.extensions_mut().insert(ErrorCode(error.code));
    if let Some(secs) = error.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// True for a path of ours that a sign-in may return to (no scheme, host or `//`).
pub fn is_safe_next(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 200
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
}

/// The language of a page request (`?lang=`, else the cookie).
#[derive(Debug, Clone, Copy)]
pub struct PageLang {
    /// The language.
    pub lang: Lang,
    /// The query chose it (the answer sets the cookie).
    pub chosen: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for PageLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == "lang")
                .map(|(_, v)| v.to_owned())
        });
        let (lang, chosen) = Lang::of(query.as_deref(), &parts.headers);
        Ok(PageLang { lang, chosen })
    }
}

fn role_sees_control(role: Role) -> bool {
    matches!(
        role,
        Role::Viewer | Role::Operator | Role::Security | Role::Admin
    )
}

fn role_sees_security(role: Role) -> bool {
    matches!(role, Role::Security | Role::Admin)
}

/// The frame of every page: header with navigation, language switch, who is signed in.
pub fn layout(
    lang: Lang,
    session: Option<&WebSession>,
    title: &str,
    here: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dcguard" }
                link rel="stylesheet" href="/static/dcguard.css";
                script src="/static/dcguard.js" defer {}
            }
            body {
                header.top {
                    span.brand { "dcguard" }
                    @if let Some(s) = session {
                        nav {
                            @if role_sees_control(s.principal.role) {
                                a href="/control-room" class=[(here == "/control-room").then_some("here")] {
                                    (lang.t(L::ControlRoom))
                                }
                            }
                            @if role_sees_security(s.principal.role) {
                                a href="/security" class=[(here == "/security").then_some("here")] {
                                    (lang.t(L::Security))
                                }
                            }
                        }
                    }
                    span.spacer {}
                    span.lang {
                        (lang.t(L::Language)) ": "
                        a href={ (here_or_root(here)) "?lang=en" } class=[(lang == Lang::En).then_some("here")] { "EN" }
                        " | "
                        a href={ (here_or_root(here)) "?lang=id" } class=[(lang == Lang::Id).then_some("here")] { "ID" }
                    }
                    @if let Some(s) = session {
                        span.who {
                            (lang.t(L::SignedInAs)) " "
                            strong #who { (s.principal.id) } " (" span #role { (s.principal.role) } ")"
                        }
                        form.inline method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button #signout type="submit" { (lang.t(L::SignOut)) }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn here_or_root(here: &str) -> &str {
    if here.is_empty() { "/signin" } else { here }
}

/// Local time of `at` in `tz` as `YYYY-MM-DD HH:MM` and the zone's abbreviation.
pub fn local(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// A duration for people: `45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// Turns the answer of an API write into the page's answer: a success redirects to
/// `back`; an error shows the API's message on an error page. The audit object and the
/// error code are carried over, so the guard records the write exactly as for the API.
pub async fn after_write(response: Response, lang: Lang, back: &str) -> Response {
    let object = response.extensions().get::<AuditObject>().cloned();
    let out = if response.status().is_success() {
        redirect(back)
    } else {
        let status = response.status();
        let code = response
            .extensions()
            .get::<ErrorCode>()
            .map_or("internal", |c| c.0);
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| "the request was refused".to_owned());
        error_page(lang, &ApiError::new(status, code, message))
    };
    let mut out = out;
    if let Some(o) = object {
        out.extensions_mut().insert(o);
    }
    out
}

/// A bad form or query: 400 with the reason.
pub fn bad_request(lang: Lang, message: impl Into<String>) -> Response {
    error_page(lang, &ApiError::bad_request(message))
}

/// Checks the CSRF token of a form post (403 when it is not the session's).
#[allow(clippy::result_large_err)]
pub fn check_csrf(lang: Lang, session: &WebSession, presented: &str) -> Result<(), Response> {
    if session.csrf_ok(presented) {
        Ok(())
    } else {
        Err(error_page(
            lang,
            &ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the form's CSRF token is not this session's; reload the page and try again",
            ),
        ))
    }
}

/// `axum::Form` whose rejection is a 400 page (never a panic, never axum's text).
pub async fn read_form<T: serde::de::DeserializeOwned>(
    lang: Lang,
    req: Request,
) -> Result<T, Response> {
    match axum::Form::<T>::from_request(req, &()).await {
        Ok(axum::Form(v)) => Ok(v),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(error_page(lang, &crate::api::error::too_large()))
        }
        Err(r) if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => Err(error_page(
            lang,
            &ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a form (Content-Type: application/x-www-form-urlencoded)",
            ),
        )),
        Err(r) => Err(bad_request(
            lang,
            format!(
                "the form is not valid: {}",
                r.body_text().chars().take(300).collect::<String>()
            ),
        )),
    }
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
        .into_response();
    secure_headers(&mut response);
    response
}

/// `/`: the role's start page.
async fn start(axum::Extension(session): axum::Extension<WebSession>) -> Response {
    if session.principal.role == Role::Security {
        redirect("/security")
    } else {
        redirect("/control-room")
    }
}

#[derive(Debug, Deserialize)]
struct SigninQuery {
    next: Option<String>,
}

/// The sign-in page; sets the double-submit cookie its form must echo.
async fn signin_page(lang: PageLang, req: Request) -> Response {
    let next = req
        .uri()
        .query()
        .and_then(next_of)
        .filter(|n| is_safe_next(n))
        .unwrap_or_default();
    signin_form(lang, &next, None, StatusCode::OK)
}

fn next_of(query: &str) -> Option<String> {
    axum::extract::Query::<SigninQuery>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()
        .and_then(|q| q.0.next)
}

fn signin_form(lang: PageLang, next: &str, problem: Option<&str>, status: StatusCode) -> Response {
    let nonce = session::random_hex();
    let l = lang.lang;
    let markup = layout(
        l,
        None,
        l.t(L::SignIn),
        "/signin",
        html! {
            section.panel.signin {
                h1 { "dcguard · " (l.t(L::SignIn)) }
                p { (l.t(L::SignInHelp)) }
                @if let Some(p) = problem {
                    p.message.error #problem { (p) }
                }
                form method="post" action="/signin" {
                    input type="hidden" name="nonce" value=(nonce);
                    input type="hidden" name="next" value=(next);
                    label for="token" { (l.t(L::Token)) }
                    input #token type="password" name="token" autocomplete="off" required;
                    button #signin type="submit" { (l.t(L::SignIn)) }
                }
            }
        },
    );
    let mut response = page_response(lang, markup);
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SIGNIN_COOKIE, &nonce, Duration::from_secs(3600), true),
    );
    response
}

#[derive(Deserialize)]
struct SigninForm {
    token: String,
    nonce: String,
    #[serde(default)]
    next: String,
}

/// Sign-in: the token is checked by the API's own `authorize` (rate limit per source and
/// token, denial in the audit chain, never the token itself); on success a session opens
/// and the sign-in is audited under the token's id.
async fn signin(State(state): State<ApiState>, lang: PageLang, req: Request) -> Response {
    let ip = crate::api::client_ip(&req);
    let headers = req.headers().clone();
    let l = lang.lang;
    let form: SigninForm = match read_form(l, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let next = Some(form.next.as_str())
        .filter(|n| is_safe_next(n) && *n != "/signin")
        .unwrap_or("/")
        .to_owned();
    let Some(rule) = crate::api::matrix::lookup("POST", "/signin") else {
        return error_page(l, &ApiError::internal());
    };
    let nonce_ok = session::cookie(&headers, SIGNIN_COOKIE).is_some_and(|c| {
        !c.is_empty()
            && crate::api::auth::token_hash(&c) == crate::api::auth::token_hash(&form.nonce)
    });
    if !nonce_ok {
        return signin_form(
            lang,
            &next,
            Some("the sign-in form expired or came from elsewhere; try again"),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim();
    let mut auth = HeaderMap::new();
    let presented = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer -"));
    auth.insert(header::AUTHORIZATION, presented);
    let principal = match crate::api::authorize(&state, rule, "/signin", ip, &auth) {
        Ok(p) => p,
        Err(error) => {
            let message = match error.code {
                "rate_limited" => format!(
                    "too many failed sign-ins from this address; retry in {} s",
                    error.retry_after.unwrap_or(60)
                ),
                "unauthenticated" => "enter a token".to_owned(),
                _ => "the token is not valid".to_owned(),
            };
            let mut r = signin_form(lang, &next, Some(&message), error.status);
            if let Some(secs) = error.retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    if principal.role == Role::Integrator {
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "role integrator has no web pages",
        );
        crate::api::deny(
            &state,
            rule,
            "/signin",
            ip,
            Some(&principal),
            None,
            &error,
            false,
        );
        return signin_form(lang, &next, Some(&error.message), StatusCode::FORBIDDEN);
    }
    let id = state.sessions.open(principal.clone(), Instant::now());
    let entry = AuditEntry {
        actor: principal.id.clone(),
        role: Some(principal.role.as_str().to_owned()),
        action: "POST /signin".to_owned(),
        object: "web session".to_owned(),
        result: "ok".to_owned(),
        status: 303,
        source: source_text(ip),
        token_fingerprint: None,
        at: Utc::now(),
    };
    if !state.audit.record(entry).await
        && let Some(m) = &state.metrics
    {
        m.audit_failures.inc();
    }
    tracing::info!(user = %principal.id, role = %principal.role, "Web sign-in.");
    let mut response = redirect(&next);
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, &id, SESSION_TTL, true),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(SIGNIN_COOKIE, "", Duration::ZERO, true),
    );
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Sign-out: ends the session and clears the cookie.
async fn signout(
    State(state): State<ApiState>,
    axum::Extension(session): axum::Extension<WebSession>,
    lang: PageLang,
    req: Request,
) -> Response {
    let cookie = session::cookie(req.headers(), SESSION_COOKIE);
    let form: CsrfForm = match read_form(lang.lang, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(lang.lang, &session, &form.csrf) {
        return r;
    }
    if let Some(id) = cookie {
        state.sessions.close(&id);
    }
    let mut response = redirect("/signin");
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", Duration::ZERO, true),
    );
    response
        .extensions_mut()
        .insert(AuditObject("web session".to_owned()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_on_this_site() {
        assert!(is_safe_next("/control-room"));
        assert!(is_safe_next("/security/visits/T-1"));
        assert!(!is_safe_next("//evil.example"));
        assert!(!is_safe_next("https://evil.example"));
        assert!(!is_safe_next("/a?b=c"));
        assert!(!is_safe_next(""));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(5), "5 s");
        assert_eq!(age(125), "2 min");
        assert_eq!(age(3 * 3600 + 5 * 60), "3 h 05 min");
        assert_eq!(age(-3), "0 s");
        assert_eq!(age(2 * 86400 + 4 * 3600), "2 d 4 h");
    }
}
