//! The web console (`console/dist`, built by esbuild) on the gRPC listener.
//! Browsers load pages with GET and HEAD, which gRPC and gRPC-Web never use
//! (their calls are POST, their preflights OPTIONS): those are answered here
//! from the console's directory, everything else passes on unchanged.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::Either;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt as _};
use tower_http::services::ServeDir;

/// The console's own scripts, styles, images and fonts, and calls to its own
/// origin (the API on this listener); nothing inline, no framing, no forms.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// For the files whose name changes with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_STORE: &str = "no-store";

const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");

/// Where the console's build is, found or not when the server starts.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleLayer {
    files: Option<ServeDir>,
    /// What a page request answers when the console is not built.
    not_built: Arc<str>,
}

impl ConsoleLayer {
    /// The console in `dir`, when `dir/index.html` exists now; looked at
    /// once: a console built later is served after a restart.
    pub(crate) fn at(dir: &Path) -> Self {
        let files = dir.join("index.html").is_file().then(|| {
            ServeDir::new(dir)
                .append_index_html_on_directories(false)
                .redirect_to_trailing_slash(false)
        });
        let not_built = not_built_message(dir).into();
        ConsoleLayer { files, not_built }
    }

    /// Whether the console's `index.html` was there at start.
    pub(crate) fn is_built(&self) -> bool {
        self.files.is_some()
    }

    /// Says how to build the console when it is not.
    pub(crate) fn not_built_message(&self) -> &str {
        &self.not_built
    }
}

fn not_built_message(dir: &Path) -> String {
    format!(
        "the console is not built (no {}): build it with \
         `npm ci --prefix console && npm run --prefix console build` (docs/console.md); \
         serving the API only",
        dir.join("index.html").display()
    )
}

impl<S> Layer<S> for ConsoleLayer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Console {
            inner,
            console: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Console<S> {
    inner: S,
    console: ConsoleLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Console<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_page_request(request.method()) {
            return Either::Left(self.inner.call(request));
        }
        // The body of a GET or HEAD means nothing here.
        let (parts, _) = request.into_parts();
        let page = answer(self.console.clone(), Request::from_parts(parts, ()));
        Either::Right(Box::pin(async move { Ok(page.await) }))
    }
}

/// GET and HEAD: what a browser asks for a page or a file, never gRPC.
fn is_page_request(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// What the console serves for a request's path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Index,
    /// A file of the build's `assets/`; whether its name carries a content hash.
    Asset {
        hashed: bool,
    },
    NotFound,
}

impl Route {
    fn of(path: &str) -> Self {
        match path {
            // The pages the service's mails link to (`{public_url}/accept-invite#token=…`,
            // `{public_url}/reset-password#token=…`) are the console's too.
            "/" | "/index.html" | "/accept-invite" | "/reset-password" => Route::Index,
            _ => match path.strip_prefix("/assets/") {
                Some(file) => Route::Asset {
                    hashed: is_content_hashed(file),
                },
                None => Route::NotFound,
            },
        }
    }
}

/// Whether a file's name carries esbuild's content hash (`app-3F2ZK7QX.js`,
/// `chunk-ABCDEFGH.js.map`): a `-`, then 8 or more of `A-Z0-9`, then the
/// extension. Anything else (a directory, an escaped name) is not.
fn is_content_hashed(file: &str) -> bool {
    if file.contains('/') {
        return false;
    }
    let Some((_, after_dash)) = file.rsplit_once('-') else {
        return false;
    };
    let Some((hash, extension)) = after_dash.split_once('.') else {
        return false;
    };
    hash.len() >= 8
        && hash
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && !extension.is_empty()
}

async fn answer(console: ConsoleLayer, mut request: Request<()>) -> Response<Body> {
    let route = Route::of(request.uri().path());
    let response = match (&console.files, &route) {
        (None, _) => text(
            StatusCode::NOT_FOUND,
            Bytes::copy_from_slice(console.not_built.as_bytes()),
        ),
        (Some(_), Route::NotFound) => text(StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
        (Some(files), Route::Index | Route::Asset { .. }) => {
            if route == Route::Index {
                *request.uri_mut() = Uri::from_static("/index.html");
            }
            serve_file(files.clone(), request).await
        }
    };
    let cacheable = matches!(route, Route::Asset { hashed: true })
        && (response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED);
    with_console_headers(html_in_utf8(response), cacheable)
}

/// The page's `text/html` (by its extension) said to be UTF-8, which is
/// what esbuild's build and the page are.
fn html_in_utf8(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    if headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value == "text/html")
    {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    response
}

/// The file of `request`'s path in the console's directory, through
/// `ServeDir`: it refuses `..` (escaped too), answers ranges and
/// If-Modified-Since, and sets the content type by the extension.
async fn serve_file(files: ServeDir, request: Request<()>) -> Response<Body> {
    let response = match files.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.map(|body| Body::new(body.map_err(std::io::Error::from)))
}

fn text(status: StatusCode, message: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The headers of every answer of the console: its content security policy,
/// no framing, no sniffing, no referrer, its own browsing context group;
/// kept for a year when `cacheable` (its name changes with its content),
/// never stored otherwise.
fn with_console_headers(mut response: Response<Body>, cacheable: bool) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        CROSS_ORIGIN_OPENER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    let cache = if cacheable { IMMUTABLE } else { NO_STORE };
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hashed_names_are_esbuilds() {
        for name in [
            "app-3F2ZK7QX.js",
            "app-3F2ZK7QX.css",
            "chunk-ABCDEFGH12.js",
            "app-3F2ZK7QX.js.map",
            "my-app-3F2ZK7QX.js",
        ] {
            assert!(is_content_hashed(name), "{name}");
        }
        for name in [
            "plain.js",
            "app-3F2ZK7Q.js",
            "app-3f2zk7qx.js",
            "app-3F2ZK7QX",
            "app-3F2ZK7QX.",
            "app_3F2ZK7QX.js",
            "sub/app-3F2ZK7QX.js",
            "app-3F2ZK%37QX.js",
            "",
        ] {
            assert!(!is_content_hashed(name), "{name}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(Route::of("/"), Route::Index);
        assert_eq!(Route::of("/index.html"), Route::Index);
        assert_eq!(Route::of("/accept-invite"), Route::Index);
        assert_eq!(Route::of("/reset-password"), Route::Index);
        assert_eq!(
            Route::of("/assets/app-3F2ZK7QX.js"),
            Route::Asset { hashed: true }
        );
        assert_eq!(
            Route::of("/assets/plain.js"),
            Route::Asset { hashed: false }
        );
        for other in [
            "/assets",
            "/favicon.ico",
            "/../Cargo.toml",
            "/index.htm",
            "/accept-invite/x",
        ] {
            assert_eq!(Route::of(other), Route::NotFound, "{other}");
        }
    }
}
