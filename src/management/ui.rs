//! The web UI: static HTML, CSS and JavaScript compiled into the binary and served by the
//! management listener at `/` (the page) and `/ui/…` (its assets), as RabbitMQ serves its UI
//! beside `/api`. The assets need no login; the page itself logs in and calls the API with HTTP
//! Basic credentials.
//!
//! Each asset is answered with its content type, `X-Content-Type-Options: nosniff`, a strong
//! `ETag` (a hash of its bytes) and `Cache-Control: no-cache`: the URLs carry no version, so a
//! browser revalidates and gets `304 Not Modified` until the binary serves different bytes.
//! The page gets a Content-Security-Policy that allows only its own scripts and styles.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::broker::Broker;

/// Every asset: its name under `/ui/` and its bytes.
const ASSETS: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("ui/index.html")),
    ("app.css", include_bytes!("ui/app.css")),
    ("favicon.svg", include_bytes!("ui/favicon.svg")),
    ("app.js", include_bytes!("ui/app.js")),
    ("api.js", include_bytes!("ui/api.js")),
    ("dom.js", include_bytes!("ui/dom.js")),
    ("chart.js", include_bytes!("ui/chart.js")),
    ("lister.js", include_bytes!("ui/lister.js")),
    ("overview.js", include_bytes!("ui/overview.js")),
    ("queues.js", include_bytes!("ui/queues.js")),
    ("exchanges.js", include_bytes!("ui/exchanges.js")),
    ("connections.js", include_bytes!("ui/connections.js")),
    ("admin.js", include_bytes!("ui/admin.js")),
];

/// The content type of an asset, from its name's ending.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The page's policy: its own scripts, styles, images and API only; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes: `/` and `/ui/{asset}`.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve("index.html", &h) }))
        .route("/favicon.ico", get(|h: HeaderMap| async move { serve("favicon.svg", &h) }))
        .route("/ui/{asset}", get(|Path(a): Path<String>, h: HeaderMap| async move { serve(&a, &h) }))
}

/// Each asset's ETag, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, bytes)| {
                // SipHash with fixed keys: the same bytes give the same tag in every process.
                let mut h = std::hash::DefaultHasher::new();
                bytes.hash(&mut h);
                format!("\"{:016x}-{}\"", h.finish(), bytes.len())
            })
            .collect()
    })
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Not Found")
            .into_response();
    };
    let bytes = ASSETS[i].1;
    let etag = &etags()[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { bytes.into_response() };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_answered_with_its_type_and_a_revalidating_cache() {
        let expected = [
            ("index.html", "text/html; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ];
        for (name, ty) in expected {
            assert_eq!(serve(name, &HeaderMap::new()).headers()[header::CONTENT_TYPE], ty, "{name}");
        }
        for (name, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
            let r = serve(name, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_ne!(r.headers()[header::CONTENT_TYPE], "application/octet-stream", "{name}");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache", "{name}");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{name}");
        }
        assert_eq!(serve("nope.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("../mod.rs", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_matching_etag_is_answered_304_and_another_200() {
        let first = serve("app.js", &HeaderMap::new());
        let tag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve("app.js", &h).status(), StatusCode::OK);
    }

    #[test]
    fn only_the_page_gets_the_content_security_policy() {
        let page = serve("index.html", &HeaderMap::new());
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert!(serve("app.js", &HeaderMap::new()).headers().get(header::CONTENT_SECURITY_POLICY).is_none());
    }

    #[test]
    fn the_page_loads_every_script_module_it_imports() {
        // Every `import … from './x.js'` names an asset that is served.
        for (name, bytes) in ASSETS.iter().filter(|(n, _)| n.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit("'./").next().and_then(|s| s.split('\'').next()).unwrap();
                assert!(ASSETS.iter().any(|(n, _)| *n == target), "{name} imports {target}, which is not served");
            }
        }
    }
}
