//! The S3-compatible object API that `stratus serve` runs on its own address (`--s3-listen`).
//!
//! `s3s` speaks the protocol (routing, XML, SigV4 including chunked uploads and presigned
//! URLs); [`s3::Objects`] implements the operations over `store::objects`, where buckets
//! belong to accounts and each change commits its notification events with it. Requests are
//! signed with the access keys of `stratus accounts` (as the Lambda API); in development
//! mode unsigned requests act as the default account.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod body;
pub mod s3;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

pub use s3::Objects;

/// S3's limit for one PutObject (5 GiB).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 30;

/// How the object API is set up.
#[derive(Debug, Clone)]
pub struct ObjectsConfig {
    pub region: String,
    /// The largest object (one PUT, or a completed multipart upload) accepted.
    pub max_object_size: u64,
    /// Unsigned requests are refused (otherwise they act as `default_account`).
    pub enforced: bool,
    pub default_account: String,
}

/// The access keys of `stratus accounts`, through the API's authenticator (and its
/// one-second cache, so a revocation reaches both APIs at once).
#[derive(Clone)]
pub struct Keys {
    auth: Arc<auth::Authenticator>,
}

impl Keys {
    pub fn new(auth: Arc<auth::Authenticator>) -> Self {
        Self { auth }
    }

    /// The account and secret of a key, `None` when unknown or revoked.
    pub async fn lookup(&self, access_key: &str) -> S3Result<Option<(String, String)>> {
        self.auth.key(access_key).await.map_err(|e| s3_error!(InternalError, "{}", e.message))
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.lookup(access_key).await? {
            Some((_, secret)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records (create one with `stratus accounts keys create`)."
            )),
        }
    }
}

/// Refuses unsigned requests when authentication is enforced.
struct Access {
    enforced: bool,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if self.enforced && cx.credentials().is_none() {
            return Err(s3_error!(
                AccessDenied,
                "Anonymous access is not allowed: sign the request with an access key"
            ));
        }
        Ok(())
    }
}

/// The caller's address, handed to the operations (it goes into event records).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// This request's id (`x-amz-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the protocol service around the operations.
pub fn service(objects: Objects, keys: Keys, enforced: bool) -> s3s::service::S3Service {
    let mut b = s3s::service::S3ServiceBuilder::new(objects);
    b.set_auth(keys);
    b.set_access(Access { enforced });
    b.build()
}

/// A request id as S3 makes them (16 upper-case hex digits).
fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

/// Serves the object API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an S3 connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let svc = service.clone();
        let handler = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let svc = svc.clone();
            let id = new_request_id();
            req.extensions_mut().insert(RemoteAddr(remote));
            req.extensions_mut().insert(RequestId(id.clone()));
            // An empty body sent with `Expect: 100-continue` leaves hyper's connection state
            // out of step with the client's (the AWS CLI then waits 60 s on its next request
            // on that connection): such a connection is not reused.
            let h = req.headers();
            let empty_expect =
                h.get(hyper::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
                    && h.get(hyper::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
            async move {
                let mut resp = hyper::service::Service::call(&svc, req).await?;
                if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v);
                }
                if empty_expect {
                    resp.headers_mut()
                        .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                }
                Ok::<_, s3s::HttpError>(resp)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(socket), handler).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}
