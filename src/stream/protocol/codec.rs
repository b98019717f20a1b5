//! Splitting a byte stream into stream-protocol frames, each size checked against the frame_max
//! in force before a byte of it is buffered for it.
//!
//! [`split_frame`] is the pure step (the connection [`state`](super::state) machine uses it on
//! its own buffer); [`FrameSplitter`] and [`StreamCodec`] wrap it as tokio
//! [`Decoder`]s, yielding raw frames or parsed [`ClientFrame`]s. Incomplete input is `Ok(None)`.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::frame::{self, ClientFrame, FrameError};

/// Bytes of the size prefix.
pub const SIZE_PREFIX: usize = 4;

/// The most a partial frame makes the buffer grow by in one step; a larger frame grows it as
/// its bytes arrive, so a size prefix alone reserves little.
const RESERVE_STEP: usize = 64 * 1024;

/// Split one whole frame (key, version, body; without the size prefix) off the front of `src`.
/// `frame_max` bounds the size prefix (which does not count itself, as RabbitMQ compares it);
/// 0 means no limit. A frame over it is an error as soon as its prefix is in, and the bytes are
/// left as they are: the stream cannot be resynchronised, the connection ends.
pub fn split_frame(src: &mut BytesMut, frame_max: u32) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = src.get(..SIZE_PREFIX) else { return Ok(None) };
    let size = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if frame_max != 0 && size > frame_max {
        return Err(FrameError::TooLarge { size, max: frame_max });
    }
    let total = SIZE_PREFIX + size as usize;
    if src.len() < total {
        src.reserve((total - src.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    src.advance(SIZE_PREFIX);
    Ok(Some(src.split_to(size as usize).freeze()))
}

/// Why decoding stopped: a frame to refuse, or the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A [`Decoder`] of raw frames (see [`split_frame`]).
#[derive(Debug, Clone)]
pub struct FrameSplitter {
    frame_max: u32,
}

impl FrameSplitter {
    pub fn new(frame_max: u32) -> Self {
        FrameSplitter { frame_max }
    }

    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Apply a new limit (the negotiated one once Open succeeded).
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }
}

impl Decoder for FrameSplitter {
    type Item = Bytes;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        Ok(split_frame(src, self.frame_max)?)
    }
}

/// A [`Decoder`] of parsed client frames: [`split_frame`] then [`frame::parse`].
#[derive(Debug, Clone)]
pub struct StreamCodec {
    pub splitter: FrameSplitter,
}

impl StreamCodec {
    pub fn new(frame_max: u32) -> Self {
        StreamCodec { splitter: FrameSplitter::new(frame_max) }
    }
}

impl Decoder for StreamCodec {
    type Item = ClientFrame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ClientFrame>, DecodeError> {
        match self.splitter.decode(src)? {
            Some(raw) => Ok(Some(frame::parse(&raw)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::protocol::code;

    #[test]
    fn splits_whole_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&[0, 0, 0, 4, 0, 0x17, 0, 1, 0, 0, 0, 4, 0, 0x17][..]);
        assert_eq!(split_frame(&mut buf, 8192).unwrap().as_deref(), Some(&[0, 0x17, 0, 1][..]));
        assert_eq!(split_frame(&mut buf, 8192).unwrap(), None);
        assert_eq!(buf.len(), 6, "a partial frame stays buffered");
        buf.extend_from_slice(&[0, 1]);
        assert!(split_frame(&mut buf, 8192).unwrap().is_some());
        assert!(buf.is_empty());
        assert_eq!(split_frame(&mut BytesMut::from(&[0, 0][..]), 8192).unwrap(), None);
    }

    #[test]
    fn size_is_checked_from_the_prefix_alone() {
        // A size equal to the limit passes; one more is refused before any body arrives.
        let mut at = BytesMut::from(&8192u32.to_be_bytes()[..]);
        assert_eq!(split_frame(&mut at, 8192).unwrap(), None);
        assert!(at.capacity() < 70 * 1024);
        let mut over = BytesMut::from(&8193u32.to_be_bytes()[..]);
        let e = split_frame(&mut over, 8192).unwrap_err();
        assert_eq!(e, FrameError::TooLarge { size: 8193, max: 8192 });
        assert_eq!(e.code(), code::FRAME_TOO_LARGE);
        // 0: no limit; a 4 GiB size prefix only makes the buffer grow by a step.
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert_eq!(split_frame(&mut huge, 0).unwrap(), None);
        assert!(huge.capacity() <= 4 + RESERVE_STEP + 64);
    }

    #[test]
    fn stream_codec_parses_and_reports_codes() {
        let mut codec = StreamCodec::new(8192);
        let mut buf = BytesMut::from(&[0, 0, 0, 4, 0, 0x17, 0, 1, 0, 0, 0, 4, 0, 0x77, 0, 1][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ClientFrame::Heartbeat));
        match codec.decode(&mut buf) {
            Err(DecodeError::Frame(e)) => assert_eq!(e.code(), code::UNKNOWN_FRAME),
            other => panic!("{other:?}"),
        }
    }
}
