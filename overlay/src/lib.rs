//! p2pmix: a peer-to-peer mixnet overlay built on libp2p.
//!
//! This is the crate applications and operators depend on. A dApp needs [`client`] (the
//! `NetworkBehaviour` it adds to its swarm, or the [`client::Client`] handle that runs one of its
//! own) and [`build_swarm`]; operators run [`node`] and [`authority`] through the `p2pmix`
//! binary. The rooms (`docs/architecture.md` has the map):
//! - [`client`]: the mixnet client (sans-IO core, behaviour, handle);
//! - [`node`]: the mix node and gateway (a loop that dispatches to one machine a concern);
//! - [`mailbox`]: gateway mailboxes, server and fetcher;
//! - [`directory`]: fetching, verifying and serving the consensus;
//! - [`measure`]: the authorities' measurement traffic and the health scores drawn from it;
//! - [`authority`]: the directory authority's driver;
//! - [`runtime`]: swarm building, clocks, files, the metrics endpoint;
//! - [`config`] and [`identity`]: files an operator writes or keeps.
//!
//! - [`test_network`]: a whole mixnet inside a test's process, for dApps' own tests.
//!
//! The Sphinx packet format ([`sphinx`]) and the consensus rules ([`bootstrap`]) live in their
//! own crates, re-exported here.
//!
//! # Features
//! - `cli` (default): the `p2pmix` binary's command line, log output, Prometheus endpoint
//!   (`metrics-endpoint`) and configuration files (`toml`). A dApp writes
//!   `p2pmix = { version = "0.1", default-features = false }`, adding `features = ["toml"]`
//!   to read an authorities file ([`config::Authorities`] can also be built in code).
//! - `metrics-endpoint`: `GET /metrics`, `/health` and `/ready` for nodes and authorities.
//! - `toml`: authorities, node and authority configuration files.
//! - `quic`: QUIC next to TCP.
//!
//! # Example
//!
//! Two clients of a test network started in this process: Alice writes to Bob's address with
//! one SURB, and Bob answers through it without learning who asked. A dApp gives
//! [`client::Client::start`] a [`client::Config`] built from its network's authorities and
//! its gateway instead of [`test_network::TestNetwork::client_config`].
//!
//! ```
//! use std::time::Duration;
//!
//! use p2pmix::{
//!     client::{Client, Event, ReceivedMessage},
//!     test_network::TestNetwork,
//! };
//!
//! /// The next message `client` receives.
//! async fn next_message(client: &mut Client) -> Option<ReceivedMessage> {
//!     loop {
//!         match client.next_event().await? {
//!             Event::Received(message) => return Some(message),
//!             _ => {} // consensus changes, delivery reports
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::time::timeout(Duration::from_secs(240), async {
//! let net = TestNetwork::start().await?;
//! let (swarm, identity, key) = TestNetwork::client_keys()?;
//! let mut alice = Client::start(swarm, identity, key, net.client_config(0))?;
//! let (swarm, identity, key) = TestNetwork::client_keys()?;
//! let mut bob = Client::start(swarm, identity, key, net.client_config(1))?;
//!
//! alice.send(&bob.address(), b"hello".to_vec(), 1).await?;
//! let question = next_message(&mut bob).await.ok_or("bob stopped")?;
//! assert_eq!(question.bytes, b"hello");
//!
//! let surbs = question.reply.ok_or("the question came without SURBs")?;
//! bob.reply(surbs, b"hello, whoever you are".to_vec()).await?;
//! let answer = next_message(&mut alice).await.ok_or("alice stopped")?;
//! assert_eq!(answer.bytes, b"hello, whoever you are");
//! assert_eq!(answer.in_reply_to, Some(question.id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).await?
//! # }
//! ```

pub mod authority;
pub mod client;
pub mod config;
pub mod directory;
pub mod identity;
pub mod mailbox;
pub mod measure;
pub mod node;
pub mod runtime;
pub mod test_network;
#[cfg(all(feature = "cli", unix))]
pub mod testnet;

pub use runtime::{Now, build_swarm};

/// The Sphinx packet format, SURBs, replay protection, epoch keys and the mix core.
pub use p2pmix_mix as sphinx;

/// Directory authorities, the consensus and its verification.
pub use p2pmix_bootstrap as bootstrap;

/// Wire types of the directory and mailbox protocols.
pub use p2pmix_proto as proto;
