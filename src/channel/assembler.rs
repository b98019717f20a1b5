//! Content assembly: `basic.publish` → content header → body frames, as a state machine.
//!
//! Pure: it validates frame order and sizes with RabbitMQ's 505/501 texts and yields a complete
//! message; it never copies a body (the chunks are the body frames' own `Bytes`).

use bytes::Bytes;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Body;
use crate::protocol::CLASS_BASIC;
use crate::protocol::codec::{BasicPublish, ContentHeader};

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
                *self = Assembler::ExpectBody { method, header, body: Body::new(), received: 0 };
                Ok(Step::Pending)
            }
            Assembler::Idle => Err(unexpected_content()),
            Assembler::ExpectBody { .. } => {
                Err(AmqpError::unexpected_frame("expected content body, got non content body frame instead")
                    .on(CLASS_BASIC, 40))
            }
        }
    }

    /// A body frame arrived.
    pub fn body(&mut self, payload: Bytes) -> AmqpResult<Step> {
        match std::mem::take(self) {
            Assembler::ExpectBody { method, header, mut body, received } => {
                let received = received + payload.len() as u64;
                if received > header.body_size {
                    return Err(
                        AmqpError::frame_error("content body frame exceeds remaining content size").on(CLASS_BASIC, 40)
                    );
                }
                if !payload.is_empty() {
                    body.push(payload);
                }
                if received == header.body_size {
                    Ok(Step::Complete(Content { method, header, body }))
                } else {
                    *self = Assembler::ExpectBody { method, header, body, received };
                    Ok(Step::Pending)
                }
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

    fn publish() -> PublishMethod {
        PublishMethod { exchange: "x".into(), routing_key: "k".into(), mandatory: false, immediate: false }
    }

    #[test]
    fn assembles_multi_frame_body_without_copying() {
        let mut a = Assembler::default();
        a.start(publish());
        assert!(matches!(a.header(header(60, 5)).unwrap(), Step::Pending));
        let p1 = Bytes::from_static(b"hel");
        assert!(matches!(a.body(p1.clone()).unwrap(), Step::Pending));
        let Step::Complete(c) = a.body(Bytes::from_static(b"lo")).unwrap() else { panic!("incomplete") };
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
        let e = a.body(Bytes::from_static(b"x")).unwrap_err();
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
        let e = a.body(Bytes::from_static(b"abc")).unwrap_err();
        assert_eq!(e.code, ReplyCode::FrameError);
    }
}
