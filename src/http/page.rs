//! `GET /`: the web inbox page and its script, stylesheet and icon, all built into the
//! binary from `assets/`. The page holds no data: it reads `/stats` and `/messages` (behind
//! `API_TOKEN` when it is set), so these routes are open.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's files; no inline
//! script or style), `nosniff`, and an ETag with `Cache-Control: no-cache`, so a browser always
//! checks, and a new binary's page is never mixed with an old cached script.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Paths, Required, ResponseBuilder};

pub const INDEX_PATH: &str = "/";
pub const SCRIPT_PATH: &str = "/assets/app.js";
pub const STYLE_PATH: &str = "/assets/app.css";
pub const ICON_PATH: &str = "/assets/icon.svg";

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

static ASSETS: [Asset; 4] = [
    Asset {
        path: INDEX_PATH,
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/index.html"),
    },
    Asset {
        path: SCRIPT_PATH,
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        path: STYLE_PATH,
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        path: ICON_PATH,
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/icon.svg"),
    },
];

/// One route per file: an unknown `/assets/…` falls through to the API's JSON 404.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let etag = etag_of(asset.body);
        router.route(
            asset.path,
            get(move |request_headers: HeaderMap| async move { answer(asset, &etag, &request_headers) }),
        )
    })
}

/// One `GET` operation per embedded file, for the OpenAPI document.
pub fn document(paths: &mut Paths) {
    for asset in &ASSETS {
        let media_type = asset.content_type.split(';').next().unwrap_or(asset.content_type);
        let body = ContentBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        let string_header = |description: &str| {
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build()
        };
        let ok = ResponseBuilder::new()
            .description("The file, built into the binary.")
            .content(media_type, body)
            .header("ETag", string_header("A strong validator of the file."))
            .header("Content-Security-Policy", string_header(CONTENT_SECURITY_POLICY))
            .build();
        let not_modified = ResponseBuilder::new()
            .description("`If-None-Match` names the current ETag.")
            .header("ETag", string_header("A strong validator of the file."))
            .build();
        let if_none_match = ParameterBuilder::new()
            .name("If-None-Match")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        let summary = if asset.path == INDEX_PATH {
            "The web inbox page (its data comes from /stats and /messages)."
        } else {
            "A file of the web inbox page."
        };
        let operation = OperationBuilder::new()
            .summary(Some(summary))
            .tag("page")
            .parameter(if_none_match)
            .response("200", ok)
            .response("304", not_modified)
            .build();
        paths.add_path_operation(asset.path, vec![HttpMethod::Get], operation);
    }
}

/// A strong validator: the first 16 bytes of the body's SHA-256, quoted.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let quoted = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&quoted)
        .unwrap_or_else(|_| unreachable!("hex digits and quotes are a valid header value"))
}

fn answer(asset: &'static Asset, etag: &HeaderValue, request_headers: &HeaderMap) -> Response {
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    if already_has(request_headers, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response()
}

/// Whether `If-None-Match` names this ETag (or `*`); weak tags compare by their opaque part
/// (RFC 9110 §13.1.2).
fn already_has(request_headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let current = etag.as_bytes();
    request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_with(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let request = request.body(Body::empty()).expect("request");
        router::<()>().oneshot(request).await.expect("response")
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_the_same_protections() {
        for asset in &ASSETS {
            let response = get_with(asset.path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            assert_eq!(header_of(&response, header::CONTENT_TYPE), asset.content_type);
            assert_eq!(
                header_of(&response, header::CONTENT_SECURITY_POLICY),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            assert_eq!(&body[..], asset.body);
        }
    }

    #[tokio::test]
    async fn a_matching_etag_answers_304_without_a_body_and_a_stale_one_gets_the_file() {
        let first = get_with(SCRIPT_PATH, None).await;
        let etag = header_of(&first, header::ETAG).to_owned();
        assert_eq!(etag.len(), 34, "{etag}");
        for matching in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"old\", {etag}"),
            "*".to_owned(),
        ] {
            let response = get_with(SCRIPT_PATH, Some(&matching)).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{matching}");
            assert_eq!(header_of(&response, header::ETAG), etag);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert!(body.is_empty());
        }
        for stale in ["\"old\"", "", &etag[1..], "W/\"x\""] {
            let response = get_with(SCRIPT_PATH, Some(stale)).await;
            assert_eq!(response.status(), StatusCode::OK, "{stale}");
        }
        let page = get_with(INDEX_PATH, Some(&etag)).await;
        assert_eq!(page.status(), StatusCode::OK, "each file has its own tag");
    }

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(page.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert_eq!(page.matches("<script").count(), 1, "no inline script");
        for forbidden in [
            " style=", "<style", " onclick", " onload", " onerror", "http://", "https://", "//cdn",
        ] {
            assert!(!page.contains(forbidden), "index.html contains {forbidden:?}");
        }
        let script = std::str::from_utf8(ASSETS[1].body).expect("utf-8");
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(forbidden), "app.js uses {forbidden}");
        }
        let style = std::str::from_utf8(ASSETS[2].body).expect("utf-8");
        for forbidden in ["@import", "url("] {
            assert!(!style.contains(forbidden), "app.css uses {forbidden}");
        }
    }
}
