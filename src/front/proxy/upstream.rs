//! HTTP/1.1 to the nodes with hyper's connection-level client. Each
//! connection is a task on the worker that opened it and lives in that
//! worker's pool: no lock, no shared count, nothing spawned per request. A
//! connection goes back to the pool when its response body has ended, and an
//! idle one is dropped after `proxy.pool_keep_alive` (below the nodes' own
//! idle timeout, so a pooled connection is not one the node already closed).

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::body::AttemptBody;

type Sender = SendRequest<AttemptBody>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: nothing was sent.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: timed out")]
    ConnectTimeout,
    /// The node did not answer with a response head in time.
    #[error("no answer in time")]
    Timeout,
    /// The request went out (maybe in part) and no answer could be read.
    #[error("{0}")]
    Exchange(hyper::Error),
}

impl UpstreamError {
    /// Whether the node certainly never saw the request.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    }
}

/// One worker's connections to the nodes, by node address.
pub struct Pool {
    idle: RefCell<HashMap<Rc<str>, Vec<(Sender, Instant)>>>,
    connect_timeout: Duration,
    keep_alive: Duration,
}

/// A connection lent to one exchange; [`Lease::release`] gives it back.
pub struct Lease {
    pool: Rc<Pool>,
    host: Rc<str>,
    sender: Sender,
}

impl Lease {
    /// Back to the pool, unless the node closed it.
    pub fn release(self) {
        if !self.sender.is_closed() {
            let mut idle = self.pool.idle.borrow_mut();
            idle.entry(self.host).or_default().push((self.sender, Instant::now()));
        }
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration, keep_alive: Duration) -> Rc<Pool> {
        Rc::new(Pool { idle: RefCell::default(), connect_timeout, keep_alive })
    }

    /// The most recently used idle connection to `host` that is still good.
    async fn reuse(&self, host: &str) -> Option<(Rc<str>, Sender)> {
        loop {
            let (key, mut sender, since) = {
                let mut idle = self.idle.borrow_mut();
                let key = idle.get_key_value(host)?.0.clone();
                let (sender, since) = idle.get_mut(host)?.pop()?;
                (key, sender, since)
            };
            if since.elapsed() >= self.keep_alive || sender.is_closed() {
                continue;
            }
            // a connection whose last body just ended may not be marked idle yet
            if sender.is_ready() || matches!(tokio::time::timeout(self.connect_timeout, sender.ready()).await, Ok(Ok(()))) {
                return Some((key, sender));
            }
        }
    }

    async fn connect(&self, host: &str) -> Result<Sender, UpstreamError> {
        let stream = match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(host)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        actix_web::rt::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends `request` to `host` on a pooled or new connection and waits up to
    /// `read_timeout` for the response head.
    pub async fn send(
        self: &Rc<Self>,
        host: &str,
        request: Request<AttemptBody>,
        read_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let (host, mut sender) = match self.reuse(host).await {
            Some(reused) => reused,
            None => (Rc::from(host), self.connect(host).await?),
        };
        match tokio::time::timeout(read_timeout, sender.send_request(request)).await {
            Ok(Ok(response)) => Ok((response, Lease { pool: self.clone(), host, sender })),
            Ok(Err(e)) => Err(UpstreamError::Exchange(e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }
}

/// A node's response body on its way to the client; the connection goes back
/// to the pool when the body has ended, and is closed if the client leaves first.
pub struct NodeBody {
    body: Option<Incoming>,
    size: BodySize,
    lease: Option<Lease>,
}

impl NodeBody {
    pub fn new(body: Incoming, length: Option<u64>, lease: Lease) -> Self {
        let size = length.map_or(BodySize::Stream, BodySize::Sized);
        NodeBody { body: Some(body), size, lease: Some(lease) }
    }

    /// The answer to a HEAD request: the length the node declared, and no body.
    pub fn empty(length: u64) -> Self {
        NodeBody { body: None, size: BodySize::Sized(length), lease: None }
    }
}

impl MessageBody for NodeBody {
    type Error = hyper::Error;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else { return Poll::Ready(None) };
        loop {
            return match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    // trailers are not passed on over HTTP/1.1 to the client
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    this.lease = None;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    if let Some(lease) = this.lease.take() {
                        lease.release();
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
