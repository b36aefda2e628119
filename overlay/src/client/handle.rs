//! [`Client`]: the client behaviour on a swarm of its own, for programs that do not run one.
//!
//! The swarm runs on a tokio task; the handle sends commands to it and receives its events.
//! Up to [`HandleConfig::max_unread_events`] ([`MAX_UNREAD_EVENTS`] by default) events wait for
//! the program; beyond that the client is backlogged ([`Behaviour::set_backlogged`]): it takes
//! nothing new from its mailbox (the gateway keeps the packets, senders retransmit, nothing is
//! lost) while its send schedule, cover traffic and fetch pace go on unchanged, so that neither
//! link shows that the program is slow. Only at four times that many ([`MAX_HELD_EVENTS`] by
//! default; past the limit only what the program's own sends cause arrives: their outcomes
//! and at most one unroutable report per packet built, which the outbox bounds) does the
//! swarm pause. Dropping the handle stops the task.

use std::sync::Arc;

use futures::StreamExt;
use libp2p_identity::Keypair;
use libp2p_swarm::SwarmEvent;
use p2pmix_mix::trace::TraceSink;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::{
    client::{
        Address, MessageId, ReplyHandle, SendError, StaticKey,
        behaviour::{Behaviour, ClientIdentity, ClientSetupError, Config, Event},
    },
    runtime::{SwarmError, build_swarm},
};

/// Why a client call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable.
    #[error(transparent)]
    Setup(#[from] ClientSetupError),
    /// The swarm could not be built.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The message was not accepted.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The client's task has stopped.
    #[error("the client has stopped")]
    Stopped,
}

/// Events that may wait for the program before the client stops taking from its mailbox (the
/// default of [`HandleConfig::max_unread_events`]).
pub const MAX_UNREAD_EVENTS: usize = 1024;

/// Events held at most before the swarm pauses, at the default limit (a last resort: past
/// [`MAX_UNREAD_EVENTS`] only the outcomes of the program's own sends arrive, which the outbox
/// bounds).
pub const MAX_HELD_EVENTS: usize = 4 * MAX_UNREAD_EVENTS;

/// Settings of the handle itself (the behaviour's are in [`Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleConfig {
    /// Events that may wait for the program before the client is backlogged (at least 1): a
    /// program that must hold less while it is busy sets fewer; the swarm pauses at four times
    /// as many.
    pub max_unread_events: usize,
}

impl Default for HandleConfig {
    fn default() -> Self {
        HandleConfig {
            max_unread_events: MAX_UNREAD_EVENTS,
        }
    }
}

enum Command {
    Send {
        to: Address,
        bytes: Vec<u8>,
        reply_surbs: usize,
        done: oneshot::Sender<Result<MessageId, SendError>>,
    },
    Reply {
        handle: ReplyHandle,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<MessageId, SendError>>,
    },
    Queued(oneshot::Sender<usize>),
    Accept(MessageId, oneshot::Sender<bool>),
    Outbox(oneshot::Sender<Vec<MessageId>>),
}

/// A running client. See the module documentation.
#[derive(Debug)]
pub struct Client {
    address: Address,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts a client on its own swarm with the swarm identity `swarm`, known at its gateway
    /// as `identity`, with the Noise key `key` (keep the client key and the Noise key to keep
    /// the address). Must be called within a tokio runtime.
    pub fn start(
        swarm: Keypair,
        identity: ClientIdentity,
        key: StaticKey,
        config: Config,
    ) -> Result<Self, ClientError> {
        Self::start_traced(swarm, identity, key, config, None)
    }

    /// [`Client::start`], recording every packet sent in `trace` (test networks only; see
    /// [`Behaviour::set_trace`]).
    pub fn start_traced(
        swarm: Keypair,
        identity: ClientIdentity,
        key: StaticKey,
        config: Config,
        trace: Option<Arc<dyn TraceSink>>,
    ) -> Result<Self, ClientError> {
        Self::start_with(swarm, identity, key, config, HandleConfig::default(), trace)
    }

    /// [`Client::start_traced`] with the handle's own settings `handle`.
    pub fn start_with(
        swarm: Keypair,
        identity: ClientIdentity,
        key: StaticKey,
        config: Config,
        handle: HandleConfig,
        trace: Option<Arc<dyn TraceSink>>,
    ) -> Result<Self, ClientError> {
        // Events in the channel wait for the program; those the channel has no room for wait
        // here, and while any do, the client is backlogged.
        let max_unread = handle.max_unread_events.max(1);
        let max_held = 3 * max_unread;
        let mut behaviour = Behaviour::new(swarm.public().to_peer_id(), identity, key, config)?;
        if let Some(sink) = trace {
            behaviour.set_trace(sink);
        }
        let identity = swarm;
        let address = behaviour.address();
        let mut swarm = build_swarm(identity, |_| behaviour)?;
        let (commands, mut command_rx) = mpsc::channel::<Command>(64);
        let (event_tx, events) = mpsc::channel(max_unread);
        let task = tokio::spawn(async move {
            let mut unread = std::collections::VecDeque::new();
            loop {
                tokio::select! {
                    permit = event_tx.reserve(), if !unread.is_empty() => match permit {
                        Ok(permit) => {
                            if let Some(event) = unread.pop_front() {
                                permit.send(event);
                            }
                            if unread.is_empty() {
                                swarm.behaviour_mut().set_backlogged(false);
                            }
                        }
                        Err(_) => return,
                    },
                    command = command_rx.recv() => match command {
                        Some(Command::Send { to, bytes, reply_surbs, done }) => {
                            let result =
                                swarm.behaviour_mut().send_with_replies(&to, &bytes, reply_surbs);
                            let _ = done.send(result);
                        }
                        Some(Command::Reply { handle, bytes, done }) => {
                            let _ = done.send(swarm.behaviour_mut().reply(handle, &bytes));
                        }
                        Some(Command::Queued(done)) => {
                            let behaviour = swarm.behaviour();
                            let busy = if behaviour.is_stored() { 0 } else { 1 };
                            let _ = done.send(behaviour.queued() + busy);
                        }
                        Some(Command::Accept(id, done)) => {
                            let _ = done.send(swarm.behaviour_mut().accept(id));
                        }
                        Some(Command::Outbox(done)) => {
                            let _ = done.send(swarm.behaviour().outbox());
                        }
                        None => return,
                    },
                    event = swarm.select_next_some(), if unread.len() < max_held => {
                        if let SwarmEvent::Behaviour(event) = event {
                            if !unread.is_empty() {
                                unread.push_back(event);
                                continue;
                            }
                            match event_tx.try_send(event) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(event)) => {
                                    unread.push_back(event);
                                    swarm.behaviour_mut().set_backlogged(true);
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                }
            }
        });
        Ok(Client {
            address,
            commands,
            events,
            task,
        })
    }

    /// This client's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Sends `bytes` to `to` (see [`Behaviour::send_with_replies`]).
    pub async fn send(
        &self,
        to: &Address,
        bytes: Vec<u8>,
        reply_surbs: usize,
    ) -> Result<MessageId, ClientError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Send {
                to: *to,
                bytes,
                reply_surbs,
                done,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(result.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Answers a received message through its SURBs.
    pub async fn reply(
        &self,
        handle: ReplyHandle,
        bytes: Vec<u8>,
    ) -> Result<MessageId, ClientError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Reply {
                handle,
                bytes,
                done,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        Ok(result.await.map_err(|_| ClientError::Stopped)??)
    }

    /// The application has the message it was handed as `id` (see
    /// [`Behaviour::accept`]).
    pub async fn accept(&self, id: MessageId) -> Result<bool, ClientError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Accept(id, done))
            .await
            .map_err(|_| ClientError::Stopped)?;
        result.await.map_err(|_| ClientError::Stopped)
    }

    /// Messages being sent, including those resumed from the store at start (their
    /// `Delivered` or `Failed` events follow).
    pub async fn outbox(&self) -> Result<Vec<MessageId>, ClientError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Outbox(done))
            .await
            .map_err(|_| ClientError::Stopped)?;
        result.await.map_err(|_| ClientError::Stopped)
    }

    /// Waits (up to `limit`) until every queued packet (acknowledgements, replies, fragments)
    /// has left, then a moment more for the connection to carry them: call before dropping
    /// a client that just received messages, or their senders will retransmit.
    pub async fn flush(&self, limit: std::time::Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (done, result) = oneshot::channel();
            self.commands
                .send(Command::Queued(done))
                .await
                .map_err(|_| ClientError::Stopped)?;
            let queued = result.await.map_err(|_| ClientError::Stopped)?;
            if queued == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Ok(())
    }

    /// An event that is already waiting, if any (to drain what arrived before stopping: the
    /// gateway and the senders consider it delivered).
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event; `None` once the client stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}
