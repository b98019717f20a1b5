//! Errors.
//!
//! Faults caused by a peer are values, never panics: every check in the protocol layers returns an
//! [`AmqpError`] that carries the AMQP reply code, RabbitMQ's reply text and the offending
//! class/method ids. The connection task turns it into exactly one `channel.close` (soft codes) or
//! `connection.close` (hard codes); nowhere else builds close frames.
//!
//! Internal faults of the broker process (I/O, configuration) are [`BrokerError`].

use std::fmt;

/// AMQP reply codes used by Warren (spec §1.9 constants, RabbitMQ's usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    ReplySuccess = 200,
    NoRoute = 312,
    ConnectionForced = 320,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The constant name RabbitMQ prefixes reply texts with.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ReplySuccess => "REPLY_SUCCESS",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the whole connection; soft ones only the channel.
    pub fn is_hard(self) -> bool {
        !matches!(
            self,
            ReplyCode::NoRoute
                | ReplyCode::AccessRefused
                | ReplyCode::NotFound
                | ReplyCode::ResourceLocked
                | ReplyCode::PreconditionFailed
        )
    }
}

/// A protocol exception: what the broker answers to a faulty peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: ReplyCode,
    /// Full reply text, `"<NAME> - <explanation>"`, at most 255 bytes.
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    /// Forces a connection-level close even for a soft code (errors raised on channel 0).
    pub force_connection: bool,
}

impl AmqpError {
    /// Build an error with RabbitMQ's `"<NAME> - <explanation>"` text.
    pub fn new(code: ReplyCode, explanation: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", code.name(), explanation);
        truncate_utf8(&mut text, 255);
        AmqpError { code, text, class_id: 0, method_id: 0, force_connection: false }
    }

    /// Attach the offending method's class and method ids.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// Whether this error closes the connection (rather than one channel).
    pub fn closes_connection(&self) -> bool {
        self.force_connection || self.code.is_hard()
    }

    pub fn not_found(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotFound, explanation)
    }
    pub fn precondition(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::PreconditionFailed, explanation)
    }
    pub fn access_refused(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::AccessRefused, explanation)
    }
    pub fn resource_locked(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ResourceLocked, explanation)
    }
    pub fn frame_error(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::FrameError, explanation)
    }
    pub fn unexpected_frame(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, explanation)
    }
    pub fn channel_error(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ChannelError, explanation)
    }
    pub fn command_invalid(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::CommandInvalid, explanation)
    }
    pub fn not_allowed(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotAllowed, explanation)
    }
    pub fn not_implemented(explanation: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotImplemented, explanation)
    }
    pub fn internal() -> Self {
        let mut e = Self::new(ReplyCode::InternalError, "");
        e.text = "INTERNAL_ERROR".into();
        e
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}.{})", self.text, self.class_id, self.method_id)
    }
}

impl std::error::Error for AmqpError {}

/// Cut `s` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Internal faults of the broker process.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration error: {0}")]
    Config(String),
    /// Durable data that cannot be opened as it is (the text says what to do).
    #[error("{0}")]
    Storage(String),
}

/// Shorthand for results carrying a protocol exception.
pub type AmqpResult<T> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_rabbitmq_shape_and_is_bounded() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'").on(50, 10);
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!((e.class_id, e.method_id), (50, 10));
        assert!(!e.closes_connection());
        let long = AmqpError::precondition("é".repeat(300));
        assert!(long.text.len() <= 255);
        assert!(AmqpError::frame_error("x").closes_connection());
    }
}
