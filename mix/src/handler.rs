//! The connection handler of `/p2pmix/sphinx/1.0.0`: one long-lived stream each way per
//! neighbour, carrying fixed-size frames (one Sphinx packet each, no length prefix: every packet
//! has the geometry's size).
//!
//! Bounded everywhere: at most [`MAX_OUTBOUND_FRAMES`] frames wait for the outbound stream (more
//! are dropped and reported); one received frame at a time waits for the behaviour, so a slow
//! behaviour pushes back on a fast sender through the transport's flow control. Writes are
//! batched: up to [`WRITE_BATCH`] frames per flush.

use std::{
    collections::VecDeque,
    io,
    task::{Context, Poll},
};

use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, future::BoxFuture};
use libp2p::{
    Stream, StreamProtocol,
    core::upgrade::ReadyUpgrade,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
    },
};

/// The protocol name.
pub const SPHINX_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/sphinx/1.0.0");
/// Frames that may wait for the outbound stream of one connection.
pub const MAX_OUTBOUND_FRAMES: usize = 4096;
/// Frames written per flush.
pub const WRITE_BATCH: usize = 64;

/// Commands from the behaviour.
#[derive(Debug)]
pub enum HandlerIn {
    /// Send one packet on this connection.
    Send(Vec<u8>),
}

/// Reports to the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// A frame arrived.
    Frame(Vec<u8>),
    /// Frames were dropped because the outbound queue was full or the stream failed.
    OutboundDropped(usize),
}

/// Reading one frame: gives the stream back with the frame.
type ReadFrame = BoxFuture<'static, io::Result<(Stream, Vec<u8>)>>;
/// Writing a batch of frames: gives the stream back.
type WriteFrames = BoxFuture<'static, io::Result<Stream>>;

enum Outbound {
    None,
    Requested,
    Idle(Stream),
    /// The write in flight, and how many frames it carries.
    Writing(WriteFrames, usize),
}

/// One connection's Sphinx streams.
pub struct Handler {
    frame_size: usize,
    inbound: Option<ReadFrame>,
    outbound: Outbound,
    queue: VecDeque<Vec<u8>>,
    events: VecDeque<HandlerEvent>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("queued", &self.queue.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler for frames of `frame_size` bytes.
    pub fn new(frame_size: usize) -> Self {
        Handler {
            frame_size,
            inbound: None,
            outbound: Outbound::None,
            queue: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn read_frame(
        mut stream: Stream,
        size: usize,
    ) -> BoxFuture<'static, io::Result<(Stream, Vec<u8>)>> {
        async move {
            let mut frame = vec![0u8; size];
            stream.read_exact(&mut frame).await?;
            Ok((stream, frame))
        }
        .boxed()
    }

    fn write_frames(
        mut stream: Stream,
        frames: Vec<Vec<u8>>,
    ) -> BoxFuture<'static, io::Result<Stream>> {
        async move {
            for frame in &frames {
                stream.write_all(frame).await?;
            }
            stream.flush().await?;
            Ok(stream)
        }
        .boxed()
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(SPHINX_PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Mix links are long-lived: keep the connection while either stream is open or traffic
        // waits.
        self.inbound.is_some() || !matches!(self.outbound, Outbound::None) || !self.queue.is_empty()
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Send(frame) => {
                if self.queue.len() >= MAX_OUTBOUND_FRAMES {
                    self.events.push_back(HandlerEvent::OutboundDropped(1));
                } else {
                    self.queue.push_back(frame);
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                // One inbound stream per neighbour: a new one replaces the old.
                self.inbound = Some(Self::read_frame(stream, self.frame_size));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.outbound = Outbound::Idle(stream);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                tracing::debug!(%error, "sphinx stream could not be opened");
                let dropped = self.queue.len();
                self.queue.clear();
                self.outbound = Outbound::None;
                if dropped > 0 {
                    self.events
                        .push_back(HandlerEvent::OutboundDropped(dropped));
                }
            }
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            let mut progressed = false;

            if let Some(read) = self.inbound.as_mut()
                && let Poll::Ready(result) = read.poll_unpin(cx)
            {
                progressed = true;
                match result {
                    Ok((stream, frame)) => {
                        // The next read starts now but is polled only after this frame has been
                        // handed to the behaviour: the swarm polls a handler only when it can take
                        // its event, so a slow behaviour slows the reader and the transport's flow
                        // control slows the sender.
                        self.events.push_back(HandlerEvent::Frame(frame));
                        self.inbound = Some(Self::read_frame(stream, self.frame_size));
                    }
                    Err(e) => {
                        tracing::debug!(%e, "inbound sphinx stream ended");
                        self.inbound = None;
                    }
                }
            }

            match std::mem::replace(&mut self.outbound, Outbound::None) {
                Outbound::None if !self.queue.is_empty() => {
                    self.outbound = Outbound::Requested;
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(ReadyUpgrade::new(SPHINX_PROTOCOL), ()),
                    });
                }
                Outbound::Idle(stream) if !self.queue.is_empty() => {
                    let n = self.queue.len().min(WRITE_BATCH);
                    let frames: Vec<Vec<u8>> = self.queue.drain(..n).collect();
                    self.outbound = Outbound::Writing(Self::write_frames(stream, frames), n);
                    progressed = true;
                }
                Outbound::Writing(mut write, n) => match write.poll_unpin(cx) {
                    Poll::Ready(Ok(stream)) => {
                        self.outbound = Outbound::Idle(stream);
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(%e, "outbound sphinx stream failed");
                        // The batch in flight is lost (how much of it reached the peer is
                        // unknown) and so is the queue.
                        let dropped = n + self.queue.len();
                        self.queue.clear();
                        self.events
                            .push_back(HandlerEvent::OutboundDropped(dropped));
                        progressed = true;
                    }
                    Poll::Pending => self.outbound = Outbound::Writing(write, n),
                },
                other => self.outbound = other,
            }

            if !progressed {
                return Poll::Pending;
            }
        }
    }
}
