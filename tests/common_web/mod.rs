//! The web page tests' HTTP side: signing in through `/signin` as a browser would (the
//! double-submit cookie, the form, the session cookie) with a client that does not follow
//! redirects, and reading the CSRF token of a page.
#![allow(dead_code)]

use std::time::Duration;

use crate::common_api::ApiRig;

/// A client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The value of cookie `name` in the answer's `Set-Cookie` headers.
pub fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (k, value) = first.split_once('=')?;
            (k == name).then(|| value.to_owned())
        })
}

/// The answer to a sign-in with `token`: (status, headers, body).
pub async fn sign_in(rig: &ApiRig, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let c = client();
    let page = c.get(rig.url("/signin")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let nonce = set_cookie(page.headers(), "dcguard_signin").expect("sign-in cookie");
    let resp = c
        .post(rig.url("/signin"))
        .header("cookie", format!("dcguard_signin={nonce}"))
        .form(&[("token", token), ("nonce", nonce.as_str()), ("next", "")])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// A signed-in session: its cookie header and CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Signs in with `token` and reads the session's CSRF token from the start page.
pub async fn session(rig: &ApiRig, token: &str) -> Session {
    let (status, headers, body) = sign_in(rig, token).await;
    assert_eq!(status, 303, "{body}");
    let id = set_cookie(&headers, "dcguard_session").expect("session cookie");
    let cookie = format!("dcguard_session={id}");
    let next = headers["location"].to_str().unwrap().to_owned();
    let next = if next == "/" {
        "/control-room".to_owned()
    } else {
        next
    };
    let mut page = get(rig, &cookie, &next).await.2;
    if !page.contains("name=\"csrf\"") {
        page = get(rig, &cookie, "/security").await.2;
    }
    let csrf = csrf_of(&page).expect("a CSRF token on the page");
    Session { cookie, csrf }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = page[at..].find('"')? + at;
    Some(page[at..end].to_owned())
}

/// GET with a cookie header: (status, headers, body).
pub async fn get(
    rig: &ApiRig,
    cookie: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = client()
        .get(rig.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // An event stream does not end: its headers are the answer.
    if headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"))
    {
        return (status, headers, String::new());
    }
    (status, headers, resp.text().await.unwrap())
}

/// POST a form with a cookie header: (status, headers, body).
pub async fn post(
    rig: &ApiRig,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = client()
        .post(rig.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}
