//! Web sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept server-side with
//! its principal, CSRF token and expiry; the guard's check of a page route
//! ([`admit`]). The API token a person signed in with is never kept, logged or shown:
//! only the principal it authenticated (id and role).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiState;
use crate::api::auth::{Principal, token_hash};
use crate::api::error::ApiError;
use crate::api::matrix::RouteRule;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "dcguard_session";
/// Name of the sign-in form's double-submit cookie.
pub const SIGNIN_COOKIE: &str = "dcguard_signin";
/// How long a session lasts from sign-in (one shift and a handover).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in session, as the guard hands it to a page handler.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// Who signed in.
    pub principal: Principal,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl WebSession {
    /// True when `presented` is this session's CSRF token (compared without early exit).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        token_hash(presented) == token_hash(&self.csrf)
    }
}

struct Entry {
    session: WebSession,
    expires: Instant,
}

/// The sessions, by the SHA-256 of their id (a memory dump gives no usable cookie).
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// 32 random bytes as hex.
pub fn random_hex() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Sessions {
    /// Opens a session for `principal`; returns its id (the cookie value).
    pub fn open(&self, principal: Principal, now: Instant) -> String {
        let id = random_hex();
        let entry = Entry {
            session: WebSession {
                principal,
                csrf: random_hex(),
            },
            expires: now + SESSION_TTL,
        };
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(token_hash(&id), entry);
        id
    }

    /// The live session of a cookie value.
    pub fn get(&self, id: &str, now: Instant) -> Option<WebSession> {
        let mut map = self.lock();
        let key = token_hash(id);
        match map.get(&key) {
            Some(e) if e.expires > now => Some(e.session.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.lock().remove(&token_hash(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock cannot leave the map half-changed (every change
        // is one insert or remove), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The value of cookie `name`, if the request has it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`; `max_age` 0 removes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, http_only: bool) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Max-Age={}; SameSite=Strict{}",
        max_age.as_secs(),
        if http_only { "; HttpOnly" } else { "" }
    );
    // Names and values are ours: hex ids, `en`/`id`; always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

/// The guard's check of a page route: a live session whose role the row allows.
/// Without one, a `GET` is redirected to `/signin` (it is how a person arrives, not a
/// refusal); anything else is refused 401 and audited. A role the row does not allow is
/// refused 403 and audited (not counted towards the rate limit: the person is signed in).
#[allow(clippy::result_large_err)] // the refusal is the answer itself, built once
pub fn admit(
    state: &ApiState,
    rule: &'static RouteRule,
    path: &str,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<WebSession, Response> {
    let session =
        cookie(headers, SESSION_COOKIE).and_then(|id| state.sessions.get(&id, Instant::now()));
    let Some(session) = session else {
        if rule.method == "GET" {
            // Back to the page after sign-in (not to its fragment, stream or export).
            let page = match path {
                "/control-room/live" | "/control-room/events" => "/control-room",
                "/security/events.csv" => "/security",
                other => other,
            };
            let next = if page == "/" || !super::is_safe_next(page) {
                String::new()
            } else {
                format!("?next={page}")
            };
            return Err(redirect(&format!("/signin{next}")));
        }
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this page needs a signed-in session; sign in at /signin",
        );
        crate::api::deny(state, rule, path, ip, None, None, &error, false);
        return Err(super::error_page(
            super::i18n::Lang::of(None, headers).0,
            &error,
        ));
    };
    if rule.allows(session.principal.role) {
        return Ok(session);
    }
    let error = ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "role {} may not {} {}",
            session.principal.role, rule.method, rule.path
        ),
    );
    crate::api::deny(
        state,
        rule,
        path,
        ip,
        Some(&session.principal),
        None,
        &error,
        false,
    );
    Err(super::error_page(
        super::i18n::Lang::of(None, headers).0,
        &error,
    ))
}

/// A 303 to `location` (a path of ours).
pub fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    super::secure_headers(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Role;

    fn who() -> Principal {
        Principal {
            id: "ops".into(),
            role: Role::Operator,
        }
    }

    /// A session is found by its id until it expires or is closed; ids and CSRF tokens
    /// are random and distinct.
    #[test]
    fn sessions_expire_and_close() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(who(), now);
        let b = sessions.open(who(), now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let s = sessions.get(&a, now).unwrap();
        assert_eq!(s.principal, who());
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok("nope"));
        assert_ne!(s.csrf, sessions.get(&b, now).unwrap().csrf);
        assert!(sessions.get(&a, now + SESSION_TTL).is_none());
        assert!(
            sessions.get(&a, now).is_none(),
            "an expired session is gone"
        );
        sessions.close(&b);
        assert!(sessions.get(&b, now).is_none());
        assert!(sessions.get("", now).is_none());
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x=1; dcguard_session=abc; y=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "z"), None);
        let v = set_cookie(SESSION_COOKIE, "abc", SESSION_TTL, true);
        let v = v.to_str().unwrap();
        assert!(
            v.contains("HttpOnly") && v.contains("SameSite=Strict"),
            "{v}"
        );
    }
}
