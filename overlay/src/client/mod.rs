//! The client, sans-IO at its core: addresses, end-to-end encryption, fragments, routes from
//! the consensus, the Poisson sending schedule, acknowledgements with retransmission, replies
//! through SURBs. A driver moves its packets and passes time in: [`Behaviour`] on a dApp's own
//! swarm, [`Client`] on a swarm of its own, or a test's simulated network.

pub mod address;
pub mod behaviour;
pub mod core;
pub mod e2e;
pub mod frame;
pub mod gateway;
pub mod handle;
pub mod route;
pub mod schedule;
pub mod store;

pub use crate::mailbox::ClientKey;
pub use address::{Address, AddressError, client_id};
pub use behaviour::{Behaviour, ClientIdentity, ClientSetupError, Config, Event};
pub use core::{
    Acknowledge, ClientConfig, ClientCore, ClientEvent, ClientStats, FailReason, ReceivedMessage,
    ReplyHandle, SavedState, SendError, StoreBatch, StoreOp, Transmitted, Unroutable,
    fragment_capacity, reply_capacity,
};
pub use e2e::StaticKey;
pub use frame::MessageId;
pub use gateway::{ChosenGateway, GatewayError, choose_gateway, gateway_for};
pub use handle::{Client, ClientError, HandleConfig};
pub use route::{
    RouteError, RouteNode, RoutePolicy, Topology, choose_loop, choose_route, choose_route_avoiding,
};
pub use schedule::{Emission, QueueFull, SendingSchedule, StreamRates};
pub use store::{CLIENT_STORE_FILE, ClientStore, StoreError};
