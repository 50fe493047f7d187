//! A lean HTTP/1.1 client: one persistent connection per worker, requests built by hand, so
//! that the load generator spends as little of the machine as it can.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::BenchError;

/// Longest wait for one answer; past it the request counts as unanswered, so that every run
/// ends within its budget plus this.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Longest wait for a TCP connection to open.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Where the load goes: `http://host:port`, with no path.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, for connecting.
    address: String,
    /// The `Host` header every request carries.
    host: HeaderValue,
    /// `Bearer <API_TOKEN>`, for services that protect their reads.
    authorization: Option<HeaderValue>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let bad_url = |reason: &'static str| BenchError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad_url("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad_url("only http:// is supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad_url("give the service's base URL, without a path"));
        }
        let authority = uri.authority().ok_or_else(|| bad_url("no host"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad_url("bad host"))?;
        Ok(Target {
            address: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
            host,
            authorization: None,
        })
    }

    /// Every request also carries `Authorization: Bearer <token>` when a token is given.
    pub fn with_api_token(mut self, token: Option<&str>) -> Result<Target, BenchError> {
        self.authorization = token
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .transpose()
            .map_err(|_| BenchError::BadRequest("the API token is not a valid header value".to_owned()))?;
        Ok(self)
    }

    /// `GET path_and_query`.
    pub fn get(&self, path_and_query: Uri) -> Request<Full<Bytes>> {
        self.request(Method::GET, path_and_query, Bytes::new())
    }

    /// `POST path` with a JSON `body` and the given extra header.
    pub fn post_json(
        &self,
        path: &'static str,
        body: Bytes,
        header: (&'static str, HeaderValue),
    ) -> Request<Full<Bytes>> {
        let mut request = self.request(Method::POST, Uri::from_static(path), body);
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header.0, header.1);
        request
    }

    fn request(&self, method: Method, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        request.headers_mut().insert(HOST, self.host.clone());
        if let Some(authorization) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, authorization.clone());
        }
        request
    }
}

/// A path and query made ready for requests (cheap to clone).
pub fn path(path_and_query: String) -> Result<Uri, BenchError> {
    Uri::try_from(path_and_query).map_err(|error| BenchError::BadRequest(error.to_string()))
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no answer within {} s", PATIENCE.as_secs())]
    TimedOut,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Connection, BenchError> {
        let connect_error = |source| BenchError::Connect {
            address: target.address.clone(),
            source,
        };
        let stream = tokio::time::timeout(CONNECT_PATIENCE, TcpStream::connect(&target.address))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (sender, driver) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| BenchError::Handshake {
                    address: target.address.clone(),
                    source,
                })?;
        // The connection's I/O runs in a task of its own; its failures show up on the next send.
        // (Polling it from the worker's task instead was measured to cost more CPU.)
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(Connection { sender })
    }

    /// Sends `request` and reads the whole answer. After an error the connection is spent: open
    /// another.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), SendError> {
        match tokio::time::timeout(PATIENCE, exchange(&mut self.sender, request)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(SendError::TimedOut),
        }
    }
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_give_an_address_and_a_host_header() {
        let target = Target::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(target.address, "127.0.0.1:8000");
        assert_eq!(target.host, "127.0.0.1:8000");
        assert_eq!(
            Target::parse("http://localhost/").unwrap().address,
            "localhost:80"
        );
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "https://127.0.0.1:8000",
            "http://127.0.0.1:8000/webhook",
            "127.0.0.1:8000",
            "",
            "http://h?x=1",
        ] {
            assert!(Target::parse(url).is_err(), "{url:?} was accepted");
        }
    }

    #[test]
    fn requests_carry_the_host_and_the_path() {
        let target = Target::parse("http://127.0.0.1:9").unwrap();
        let request = target.get(Uri::from_static("/messages?from=%2B91"));
        assert_eq!(request.uri(), "/messages?from=%2B91");
        assert_eq!(request.headers()[HOST], "127.0.0.1:9");
        let post = target.post_json(
            "/webhook",
            Bytes::from_static(b"{}"),
            ("x-signature", HeaderValue::from_static("ab")),
        );
        assert_eq!(post.method(), Method::POST);
        assert_eq!(post.headers()["x-signature"], "ab");
        assert_eq!(post.headers()[CONTENT_TYPE], "application/json");
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn an_api_token_rides_on_every_request() {
        let target = Target::parse("http://127.0.0.1:9")
            .unwrap()
            .with_api_token(Some("s3cret"))
            .unwrap();
        let request = target.get(Uri::from_static("/stats"));
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer s3cret");
        let bad = Target::parse("http://127.0.0.1:9")
            .unwrap()
            .with_api_token(Some("a\nb"));
        assert!(bad.is_err());
    }
}
