//! HTML building blocks of the status page: the one escape helper every interpolated string
//! goes through, number formats, and the page frame (head, navigation, sign-out) with the
//! headers every page is sent with.
//!
//! Pages are plain strings built with `write!`: a few small tables do not need a template
//! engine, and keeping every value behind [`esc`] is easy to check by reading.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::session::Role;

/// Text made safe for HTML element content and quoted attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `12s`, `4m05s`, `2h03m`, `3d04h`.
pub(super) fn duration_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The pages in the navigation bar: path and label.
pub(super) const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/accounts", "Accounts"),
    ("/ui/routing", "Routing"),
    ("/ui/keys", "Keys"),
    ("/ui/usage", "Usage"),
];

/// Headers of every page: no caching (the pages show live state and are behind a sign-in), no
/// framing, no referrer, and a content policy that allows nothing but relayd itself — so the
/// page provably reaches no other host, and injected markup could run no script.
fn secured(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The head of every document. The empty data-URL icon keeps browsers from asking for
/// `/favicon.ico` (a 404 they would log as a console error).
fn head(title: &str, out: &mut String) {
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · relayd</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\"></head>",
        esc(title)
    );
}

/// A signed-in page: navigation with `path` marked current, who is signed in, sign-out, then
/// `body`.
pub(super) fn page(role: Role, path: &str, title: &str, body: &str) -> Response {
    let mut out = String::with_capacity(body.len() + 1024);
    head(title, &mut out);
    out.push_str("<body><header><nav><span class=\"brand\">relayd</span>");
    for (href, label) in NAV {
        let current = if *href == path {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
    }
    let _ = write!(
        out,
        "</nav><form method=\"post\" action=\"/ui/logout\" class=\"signout\">\
         <span class=\"role\">{}</span><button type=\"submit\">Sign out</button></form>\
         </header><main><h1>{}</h1>{body}</main></body></html>",
        esc(role.as_str()),
        esc(title)
    );
    secured(StatusCode::OK, out)
}

/// The sign-in form, with `error` above it when the last attempt failed.
pub(super) fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let mut out = String::with_capacity(1024);
    head("Sign in", &mut out);
    out.push_str("<body class=\"login\"><main><h1>relayd</h1>");
    if let Some(error) = error {
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", esc(error));
    }
    out.push_str(
        "<form method=\"post\" action=\"/ui/login\"><label for=\"token\">Admin or viewer token\
         </label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" \
         required autofocus><button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The admin token is in <code>&lt;data_dir&gt;/admin.token</code>.</p>\
         </main></body></html>",
    );
    secured(status, out)
}

/// A page-level error (a bad query parameter, a store that cannot answer) inside the frame.
pub(super) fn error_page(role: Role, path: &str, status: StatusCode, message: &str) -> Response {
    let body = format!("<p class=\"error\" role=\"alert\">{}</p>", esc(message));
    let mut response = page(role, path, "Error", &body);
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            esc("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(esc("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration_text(5), "5s");
        assert_eq!(duration_text(245), "4m05s");
        assert_eq!(duration_text(7380), "2h03m");
        assert_eq!(duration_text(3 * 86_400 + 4 * 3600), "3d04h");
    }
}
