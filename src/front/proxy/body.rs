//! The request body as forwarded: streamed, never buffered, limited in size, and
//! replayable on another node only while no byte of it has been read.

use actix_web::body::BodySize;
use actix_web::error::PayloadError;
use http_body::{Frame, SizeHint};
use actix_web::web::{Bytes, Payload};
use futures_util::Stream;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client body: {0}")]
    Payload(#[from] PayloadError),
    #[error("request body is larger than the limit")]
    TooLarge,
    #[error("request body was already sent to another node")]
    Consumed,
}

/// Owner of a request's body across forwarding attempts.
pub struct RequestBody {
    slot: Rc<RefCell<Option<Payload>>>,
    size: BodySize,
    limit: u64,
    too_large: Rc<Cell<bool>>,
}

impl RequestBody {
    /// `length` is the request's Content-Length; `chunked` whether it is sent chunked.
    pub fn new(payload: Payload, length: Option<u64>, chunked: bool, limit: u64) -> Self {
        let size = match (length, chunked) {
            (Some(n), false) => BodySize::Sized(n),
            (_, true) => BodySize::Stream,
            (None, false) => BodySize::None,
        };
        RequestBody { slot: Rc::new(RefCell::new(Some(payload))), size, limit, too_large: Rc::default() }
    }

    /// Whether another attempt can still send the whole body.
    pub fn replayable(&self) -> bool {
        matches!(self.size, BodySize::None | BodySize::Sized(0)) || self.slot.borrow().is_some()
    }

    /// Whether an attempt stopped because the body passed the limit.
    pub fn too_large(&self) -> bool {
        self.too_large.get()
    }

    /// The body for one attempt: it takes the client's stream on its first read.
    pub fn attempt(&self) -> AttemptBody {
        AttemptBody {
            slot: self.slot.clone(),
            stream: None,
            size: self.size,
            sent: 0,
            limit: self.limit,
            too_large: self.too_large.clone(),
        }
    }
}

pub struct AttemptBody {
    slot: Rc<RefCell<Option<Payload>>>,
    stream: Option<Payload>,
    size: BodySize,
    sent: u64,
    limit: u64,
    too_large: Rc<Cell<bool>>,
}

impl http_body::Body for AttemptBody {
    type Data = Bytes;
    type Error = BodyError;

    fn size_hint(&self) -> SizeHint {
        match self.size {
            BodySize::Sized(n) => SizeHint::with_exact(n),
            BodySize::None => SizeHint::with_exact(0),
            BodySize::Stream => SizeHint::default(),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.size, BodySize::None | BodySize::Sized(0))
    }

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if matches!(this.size, BodySize::None | BodySize::Sized(0)) {
            return Poll::Ready(None);
        }
        if this.stream.is_none() {
            match this.slot.borrow_mut().take() {
                Some(payload) => this.stream = Some(payload),
                None => return Poll::Ready(Some(Err(BodyError::Consumed))),
            }
        }
        let Some(stream) = this.stream.as_mut() else { return Poll::Ready(None) };
        match Pin::new(stream).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.sent += chunk.len() as u64;
                if this.sent > this.limit {
                    this.too_large.set(true);
                    return Poll::Ready(Some(Err(BodyError::TooLarge)));
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
