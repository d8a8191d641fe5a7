//! The web dashboard's static files (`web/`, embedded at build time) served at `/` and `/assets/…` with strict headers.
//!
//! The page holds no data: everything it shows it reads from the public `/api/v1` API with the token the user
//! pastes, so these routes need no authentication. Only the files listed in [`ASSETS`] are served (the
//! screenshots in `web/screenshots/` are documentation and stay out of the binary).

use std::sync::OnceLock;

use poem::http::{header, HeaderValue, StatusCode};
use poem::{handler, web::Path, Request, Response, Route};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// The name under `/assets/` (`index.html` is served at `/`).
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file the page is made of; nothing else under `web/` is reachable.
pub const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("../web/index.html") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../web/app.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/app.js") },
    Asset { name: "api.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/api.js") },
    Asset { name: "views.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../web/views.js") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../web/icon.svg") },
];

/// Scripts, styles, images and connections from this origin only: no inline script or style, no plugin,
/// no framing, no `<base>` rewriting, forms post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes, added to the HTTP door's root beside `/api/v1`.
pub fn mount(routes: Route) -> Route {
    routes.at("/", poem::get(index)).at("/assets/:name", poem::get(asset))
}

#[handler]
fn index(req: &Request) -> Response {
    serve(req, &ASSETS[0])
}

#[handler]
fn asset(req: &Request, Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(req, a),
        None => {
            let mut r = Response::builder().status(StatusCode::NOT_FOUND).content_type("text/plain; charset=utf-8").body("no such asset");
            security_headers(&mut r);
            r
        }
    }
}

/// Strong validators, computed once: the files cannot change while the binary runs.
fn etag(a: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..32])).collect());
    let i = ASSETS.iter().position(|x| x.name == a.name).unwrap_or(0);
    &tags[i]
}

/// The file, or `304 Not Modified` when the browser holds this version. `no-cache` makes the browser
/// revalidate every time, so a new binary's page is never mixed with an old one's scripts.
fn serve(req: &Request, a: &Asset) -> Response {
    let tag = etag(a);
    let fresh = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut r = if fresh {
        Response::builder().status(StatusCode::NOT_MODIFIED).finish()
    } else {
        Response::builder().content_type(a.content_type).body(a.body)
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(&mut r);
    r
}

fn security_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
