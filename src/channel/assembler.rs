//! Content assembly: `basic.publish` → content header → body frames, as a state machine.
//!
//! Pure: it validates frame order and sizes with RabbitMQ's 505/501 texts and yields a complete
//! message; it never copies a body (the chunks are the body frames' own `Bytes`).
//!
//! A peer can announce a large `body_size` on every one of its channels and send the bodies
//! slowly; what it sent is held until each message is complete. A [`ContentBudget`] shared by a
//! connection's channels bounds the total: a body frame that would take the connection past it
//! is refused (406, which closes the channel and frees its partial body).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Body;
use crate::protocol::CLASS_BASIC;
use crate::protocol::codec::{BasicPublish, ContentHeader};

/// Bytes of partially received bodies held by one connection's channels, and their limit.
#[derive(Debug, Clone)]
pub struct ContentBudget {
    held: Arc<AtomicU64>,
    limit: u64,
}

impl ContentBudget {
    pub fn new(limit: u64) -> Self {
        ContentBudget { held: Arc::new(AtomicU64::new(0)), limit }
    }

    /// Bytes currently held in unfinished bodies.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// The bytes of one unfinished body counted in a [`ContentBudget`]; given back when dropped
/// (message complete, refused, or its channel gone).
#[derive(Debug)]
pub struct Held {
    held: Arc<AtomicU64>,
    n: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// The publish method's fields that matter after assembly.
pub type PublishMethod = BasicPublish;

/// A fully received message, ready to route.
#[derive(Debug)]
pub struct Content {
    pub method: PublishMethod,
    pub header: ContentHeader,
    pub body: Body,
}

// The header (parsed properties) is held inline: boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub enum Assembler {
    #[default]
    Idle,
    ExpectHeader(PublishMethod),
    ExpectBody {
        method: PublishMethod,
        header: ContentHeader,
        body: Body,
        received: u64,
        /// `received`, as counted in the connection's budget (None until the first body frame).
        counted: Option<Held>,
    },
}

/// What feeding a frame produced.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// More frames are needed.
    Pending,
    /// The message is complete.
    Complete(Content),
}

impl Assembler {
    pub fn is_idle(&self) -> bool {
        matches!(self, Assembler::Idle)
    }

    /// A `basic.publish` arrived (the caller checked that this assembler is idle).
    pub fn start(&mut self, method: PublishMethod) {
        *self = Assembler::ExpectHeader(method);
    }

    /// A method frame arrived: an error unless no content is in progress.
    pub fn check_method(&self) -> AmqpResult<()> {
        match self {
            Assembler::Idle => Ok(()),
            Assembler::ExpectHeader(_) => Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )
            .on(CLASS_BASIC, 40)),
            Assembler::ExpectBody { .. } => {
                Err(AmqpError::unexpected_frame("expected content body, got non content body frame instead")
                    .on(CLASS_BASIC, 40))
            }
        }
    }

    /// A content header arrived.
    pub fn header(&mut self, header: ContentHeader) -> AmqpResult<Step> {
        match std::mem::take(self) {
            Assembler::ExpectHeader(method) => {
                if header.class_id != CLASS_BASIC {
                    return Err(AmqpError::unexpected_frame(format_args!(
                        "expected content header for class 60, got one for class {} instead",
                        header.class_id
                    ))
                    .on(CLASS_BASIC, 40));
                }
                if header.body_size == 0 {
                    return Ok(Step::Complete(Content { method, header, body: Body::new() }));
                }
                *self = Assembler::ExpectBody { method, header, body: Body::new(), received: 0, counted: None };
                Ok(Step::Pending)
            }
            Assembler::Idle => Err(unexpected_content()),
            Assembler::ExpectBody { .. } => {
                Err(AmqpError::unexpected_frame("expected content body, got non content body frame instead")
                    .on(CLASS_BASIC, 40))
            }
        }
    }

    /// A body frame arrived; unfinished bodies are counted in `budget`.
    pub fn body(&mut self, payload: Bytes, budget: &ContentBudget) -> AmqpResult<Step> {
        match std::mem::take(self) {
            Assembler::ExpectBody { method, header, mut body, received, counted } => {
                let len = payload.len() as u64;
                let received = received + len;
                if received > header.body_size {
                    return Err(
                        AmqpError::frame_error("content body frame exceeds remaining content size").on(CLASS_BASIC, 40)
                    );
                }
                if !payload.is_empty() {
                    body.push(payload);
                }
                if received == header.body_size {
                    return Ok(Step::Complete(Content { method, header, body }));
                }
                let mut counted = counted.unwrap_or_else(|| Held { held: budget.held.clone(), n: 0 });
                let before = budget.held.fetch_add(len, Ordering::Relaxed);
                counted.n += len;
                if before + len > budget.limit {
                    // `counted` (this whole partial body) is given back as it drops here.
                    return Err(AmqpError::precondition(format_args!(
                        "partially received message bodies on this connection exceed {} bytes",
                        budget.limit
                    ))
                    .on(CLASS_BASIC, 40));
                }
                *self = Assembler::ExpectBody { method, header, body, received, counted: Some(counted) };
                Ok(Step::Pending)
            }
            Assembler::Idle => Err(unexpected_content()),
            Assembler::ExpectHeader(_) => Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )
            .on(CLASS_BASIC, 40)),
        }
    }
}

fn unexpected_content() -> AmqpError {
    AmqpError::unexpected_frame("expected method frame, got non method frame instead")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyCode;

    fn header(class_id: u16, size: u64) -> ContentHeader {
        ContentHeader {
            channel: 1,
            class_id,
            body_size: size,
            summary: Default::default(),
            decoded: None,
            raw: Bytes::new(),
        }
    }

    fn budget() -> ContentBudget {
        ContentBudget::new(1 << 20)
    }

    fn publish() -> PublishMethod {
        PublishMethod { exchange: "x".into(), routing_key: "k".into(), mandatory: false, immediate: false }
    }

    #[test]
    fn assembles_multi_frame_body_without_copying() {
        let mut a = Assembler::default();
        a.start(publish());
        assert!(matches!(a.header(header(60, 5)).unwrap(), Step::Pending));
        let p1 = Bytes::from_static(b"hel");
        assert!(matches!(a.body(p1.clone(), &budget()).unwrap(), Step::Pending));
        let Step::Complete(c) = a.body(Bytes::from_static(b"lo"), &budget()).unwrap() else { panic!("incomplete") };
        assert_eq!(c.body.len(), 2);
        assert_eq!(c.body[0].as_ptr(), p1.as_ptr());
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_at_header() {
        let mut a = Assembler::default();
        a.start(publish());
        assert!(matches!(a.header(header(60, 0)).unwrap(), Step::Complete(_)));
    }

    #[test]
    fn out_of_order_frames_get_rabbitmq_errors() {
        let mut a = Assembler::default();
        let e = a.body(Bytes::from_static(b"x"), &budget()).unwrap_err();
        assert_eq!(e.text, "UNEXPECTED_FRAME - expected method frame, got non method frame instead");
        a.start(publish());
        let e = a.check_method().unwrap_err();
        assert_eq!(
            e.text,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
        );
        let e = a.header(header(50, 1)).unwrap_err();
        assert_eq!(e.text, "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead");
        let mut a = Assembler::default();
        a.start(publish());
        a.header(header(60, 2)).unwrap();
        assert_eq!(
            a.check_method().unwrap_err().text,
            "UNEXPECTED_FRAME - expected content body, got non content body frame instead"
        );
        let e = a.body(Bytes::from_static(b"abc"), &budget()).unwrap_err();
        assert_eq!(e.code, ReplyCode::FrameError);
    }

    #[test]
    fn unfinished_bodies_share_one_budget_and_give_it_back() {
        let budget = ContentBudget::new(10);
        let mut a = Assembler::default();
        let mut b = Assembler::default();
        for x in [&mut a, &mut b] {
            x.start(publish());
            x.header(header(60, 100)).unwrap();
        }
        a.body(Bytes::from_static(b"1234"), &budget).unwrap();
        b.body(Bytes::from_static(b"1234"), &budget).unwrap();
        assert_eq!(budget.held(), 8);
        let e = a.body(Bytes::from_static(b"123"), &budget).unwrap_err();
        assert_eq!(e.code, ReplyCode::PreconditionFailed);
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - partially received message bodies on this connection exceed 10 bytes"
        );
        assert_eq!(budget.held(), 4, "the refused body was given back");
        drop(b);
        assert_eq!(budget.held(), 0, "a dropped channel gives its body back");
        // A message completing gives its bytes back too.
        let mut c = Assembler::default();
        c.start(publish());
        c.header(header(60, 6)).unwrap();
        c.body(Bytes::from_static(b"123"), &budget).unwrap();
        assert_eq!(budget.held(), 3);
        assert!(matches!(c.body(Bytes::from_static(b"456"), &budget).unwrap(), Step::Complete(_)));
        assert_eq!(budget.held(), 0);
    }
}
