//! The status page at `/ui/`: server-rendered, read-only HTML over the data the admin API
//! serves — the live snapshot, the routing table, the keys and usage charts — for operators who
//! judge a relay at a glance. No framework, no script, no CDN: one stylesheet embedded in the
//! binary, and a content policy that lets the page reach nothing but relayd.
//!
//! Sign-in is with the admin token or the read-only viewer token (`[ui] viewer_token_file`);
//! the session is a signed cookie ([`session`]). Everything under `/ui` except the sign-in
//! form and the stylesheet needs that cookie; without it the browser is sent to `/ui/login`.
//! `[ui] enabled = false` leaves the routes out, so `/ui/` is a 404.
//!
//! - [`html`]: escaping and the page frame. [`pages`]: overview, accounts, routing, keys.
//! - [`usage`]: the usage page's form and data. [`chart`]: stacked bars as inline SVG.

mod chart;
mod html;
mod pages;
mod session;
mod usage;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use shared::time::now_millis;

use self::pages::RateSampler;
use self::session::{COOKIE, Role, Sessions, cookie_value};
use crate::state::AppState;

/// The stylesheet, embedded so the page needs nothing beside the binary.
const STYLE: &str = include_str!("assets/style.css");

/// What the page's handlers share: relayd's state, the session keys and the rate baseline.
#[derive(Clone, Debug)]
struct Ui {
    app: AppState,
    sessions: Arc<Sessions>,
    rates: Arc<RateSampler>,
}

/// The `/ui` routes, with the sign-in check in front of every page.
pub fn router(state: AppState) -> Router<AppState> {
    let ui = Ui {
        sessions: Arc::new(Sessions::new(
            &state.admin_token,
            state.ui_viewer_token.as_deref(),
            state.config.ui.session(),
            state.config.ui.secure_cookie,
        )),
        rates: Arc::new(RateSampler::default()),
        app: state,
    };
    let pages = Router::new()
        .route("/ui/", get(overview))
        .route("/ui/accounts", get(accounts))
        .route("/ui/routing", get(routing))
        .route("/ui/keys", get(keys))
        .route("/ui/usage", get(usage_page))
        .route("/ui/logout", axum::routing::post(logout))
        .route_layer(middleware::from_fn_with_state(ui.clone(), require_session));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        // A token is short: a large body here is not a sign-in.
        .route(
            "/ui/login",
            get(login_form)
                .post(login)
                .layer(DefaultBodyLimit::max(4096)),
        )
        .route("/ui/assets/style.css", get(style))
        .merge(pages)
        .with_state(ui)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The signed-in role, put into the request by [`require_session`].
#[derive(Clone, Copy, Debug)]
struct SignedIn(Role);

/// Sends requests without a valid session cookie to the sign-in form (303, so a browser follows
/// with a GET whatever the method was).
async fn require_session(State(ui): State<Ui>, mut req: Request, next: Next) -> Response {
    let role = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie_value(v, COOKIE))
        .find_map(|value| ui.sessions.check(value, now_secs()));
    match role {
        Some(role) => {
            req.extensions_mut().insert(SignedIn(role));
            next.run(req).await
        }
        None => Redirect::to("/ui/login").into_response(),
    }
}

fn role_of(req: &axum::http::Extensions) -> Role {
    // The middleware always inserts it on these routes; viewer is the safe reading otherwise.
    req.get::<SignedIn>().map_or(Role::Viewer, |s| s.0)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

async fn login_form() -> Response {
    html::login_page(StatusCode::OK, None)
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token; on success sets the session cookie and goes to the overview. A wrong or
/// missing token shows the form again with a 401 and an error that never repeats the token.
async fn login(State(ui): State<Ui>, form: Result<Form<LoginForm>, FormRejection>) -> Response {
    let Ok(Form(form)) = form else {
        return html::login_page(
            StatusCode::BAD_REQUEST,
            Some("The sign-in form was not understood: send the field `token`."),
        );
    };
    let Some(role) = ui.sessions.sign_in(form.token.trim()) else {
        tracing::warn!("status page: sign-in with a wrong token");
        return html::login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token or the viewer token."),
        );
    };
    tracing::info!(role = role.as_str(), "status page: signed in");
    let cookie = ui.sessions.set_cookie(&ui.sessions.issue(role, now_secs()));
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(ui): State<Ui>) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&ui.sessions.clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn overview(State(ui): State<Ui>, req: Request) -> Response {
    let snapshot = crate::admin::live_snapshot(&ui.app).await;
    let body = pages::overview(&snapshot, &ui.rates);
    html::page(role_of(req.extensions()), "/ui/", "Overview", &body)
}

async fn accounts(State(ui): State<Ui>, req: Request) -> Response {
    let snapshot = crate::admin::live_snapshot(&ui.app).await;
    let body = pages::accounts(&snapshot);
    html::page(role_of(req.extensions()), "/ui/accounts", "Accounts", &body)
}

async fn routing(State(ui): State<Ui>, req: Request) -> Response {
    let table = crate::admin::routing_table(&ui.app);
    let body = pages::routing(&table, now_millis());
    html::page(
        role_of(req.extensions()),
        "/ui/routing",
        "Routing table",
        &body,
    )
}

async fn keys(State(ui): State<Ui>, req: Request) -> Response {
    let snapshot = crate::admin::live_snapshot(&ui.app).await;
    let body = pages::keys(&ui.app.keys.list(), &snapshot);
    html::page(role_of(req.extensions()), "/ui/keys", "Relay keys", &body)
}

async fn usage_page(
    State(ui): State<Ui>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    req: Request,
) -> Response {
    let role = role_of(req.extensions());
    let path = "/ui/usage";
    let request = match query {
        Ok(Query(pairs)) => usage::parse(&pairs),
        Err(e) => Err(format!("bad query string: {e}")),
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => return html::error_page(role, path, StatusCode::BAD_REQUEST, &message),
    };
    match usage::body(&ui.app, request, now_millis()).await {
        Ok(body) => html::page(role, path, "Usage", &body),
        Err(e) => html::error_page(role, path, e.kind.status(), &e.message),
    }
}
