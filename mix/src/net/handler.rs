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
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_swarm::Stream;
use libp2p_swarm::StreamProtocol;
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol,
    handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
};

use crate::pool::PacketPool;

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

/// The inbound stream and the frame being read into a pooled buffer.
struct Reading {
    stream: Stream,
    frame: Vec<u8>,
    filled: usize,
}

/// A frame being written: how much of it is out.
struct Writing {
    frame: Vec<u8>,
    written: usize,
}

enum Outbound {
    None,
    Requested,
    Open {
        stream: Stream,
        /// The frame being written.
        current: Option<Writing>,
        /// Frames written since the last flush.
        unflushed: usize,
    },
}

/// One connection's Sphinx streams. Reads and writes are polled directly on the streams (no
/// future per frame), and frame buffers come from and go back to the behaviour's
/// [`PacketPool`]: relaying allocates nothing per packet.
pub struct Handler {
    pool: Arc<PacketPool>,
    inbound: Option<Reading>,
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
    /// A handler whose frames are the pool's buffer size.
    pub fn new(pool: Arc<PacketPool>) -> Self {
        Handler {
            pool,
            inbound: None,
            outbound: Outbound::None,
            queue: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Reads until one frame is complete (returned), the stream blocks or ends.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let Some(r) = self.inbound.as_mut() else {
            return Poll::Pending;
        };
        loop {
            let Some(rest) = r.frame.get_mut(r.filled..) else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut r.stream).poll_read(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(None),
                Poll::Ready(Ok(n)) => {
                    r.filled += n;
                    if r.filled == r.frame.len() {
                        r.filled = 0;
                        return Poll::Ready(Some(std::mem::replace(
                            &mut r.frame,
                            self.pool.take(),
                        )));
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(%e, "inbound sphinx stream ended");
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes queued frames until the queue is empty and flushed, or the stream blocks.
    /// `Ready(Err)` when the stream failed.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Outbound::Open {
            stream,
            current,
            unflushed,
        } = &mut self.outbound
        else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if current.is_none() && *unflushed < WRITE_BATCH {
                *current = self
                    .queue
                    .pop_front()
                    .map(|frame| Writing { frame, written: 0 });
            }
            match current {
                Some(Writing { frame, written }) => {
                    let rest = frame.get(*written..).unwrap_or_default();
                    match Pin::new(&mut *stream).poll_write(cx, rest) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(n)) => {
                            *written += n;
                            if *written >= frame.len()
                                && let Some(Writing { frame, .. }) = current.take()
                            {
                                self.pool.give(frame);
                                *unflushed += 1;
                            }
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                None if *unflushed > 0 => match Pin::new(&mut *stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => *unflushed = 0,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
                None => return Poll::Ready(Ok(())),
            }
        }
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
                    self.pool.give(frame);
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
                self.inbound = Some(Reading {
                    stream,
                    frame: self.pool.take(),
                    filled: 0,
                });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.outbound = Outbound::Open {
                    stream,
                    current: None,
                    unflushed: 0,
                };
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                tracing::debug!(%error, "sphinx stream could not be opened");
                let dropped = self.queue.len();
                for frame in self.queue.drain(..) {
                    self.pool.give(frame);
                }
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
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        // One frame at a time goes to the behaviour: the swarm polls a handler only when it can
        // take its event, so a slow behaviour slows the reader and the transport's flow control
        // slows the sender.
        match self.poll_inbound(cx) {
            Poll::Ready(Some(frame)) => {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                    HandlerEvent::Frame(frame),
                ));
            }
            Poll::Ready(None) => self.inbound = None,
            Poll::Pending => {}
        }
        match self.outbound {
            Outbound::None if !self.queue.is_empty() => {
                self.outbound = Outbound::Requested;
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(ReadyUpgrade::new(SPHINX_PROTOCOL), ()),
                });
            }
            Outbound::Open { .. } => {
                if let Poll::Ready(Err(e)) = self.poll_outbound(cx) {
                    tracing::debug!(%e, "outbound sphinx stream failed");
                    // The frame in flight is lost (how much of it reached the peer is unknown)
                    // and so is the queue.
                    let in_flight = match std::mem::replace(&mut self.outbound, Outbound::None) {
                        Outbound::Open {
                            current: Some(_), ..
                        } => 1,
                        _ => 0,
                    };
                    let dropped = in_flight + self.queue.len();
                    for frame in self.queue.drain(..) {
                        self.pool.give(frame);
                    }
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                        HandlerEvent::OutboundDropped(dropped),
                    ));
                }
            }
            _ => {}
        }
        Poll::Pending
    }
}
