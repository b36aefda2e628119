//! A client's address: one printable string naming its gateway, its client id (what the gateway
//! files its packets under) and its static Noise key (what senders encrypt to).
//!
//! Form: `p2pmix1:<gateway peer id>:<client id, 64 hex>:<noise key, 64 hex>`.

use std::{fmt, str::FromStr};

use libp2p::PeerId;
use p2pmix_mix::ClientId;
use thiserror::Error;

const PREFIX: &str = "p2pmix1";

/// Where and how to reach one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// The gateway the client fetches its packets from.
    pub gateway: PeerId,
    /// The id the gateway files the client's packets under.
    pub client: ClientId,
    /// The client's static X25519 key for end-to-end encryption.
    pub noise_key: [u8; 32],
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not four `:`-separated parts starting with `p2pmix1`.
    #[error("an address looks like p2pmix1:<gateway peer id>:<64 hex>:<64 hex>")]
    Shape,
    /// The gateway part is not a peer id.
    #[error("the gateway is not a peer id: {0}")]
    Gateway(String),
    /// A key part is not 64 hex digits.
    #[error("the {0} is not 64 hex digits")]
    Hex(&'static str),
}

/// The client id a gateway gives the client with libp2p identity `peer`: a hash of the peer id,
/// so that only the holder of that identity can register for it.
pub fn client_id(peer: &PeerId) -> ClientId {
    ClientId(blake3::derive_key(
        "p2pmix 2026-11 client id v1",
        &peer.to_bytes(),
    ))
}

fn hex32(s: &str, what: &'static str) -> Result<[u8; 32], AddressError> {
    let bytes = hex::decode(s).map_err(|_| AddressError::Hex(what))?;
    bytes.try_into().map_err(|_| AddressError::Hex(what))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let [prefix, gateway, client, key] = parts.as_slice() else {
            return Err(AddressError::Shape);
        };
        if *prefix != PREFIX {
            return Err(AddressError::Shape);
        }
        Ok(Address {
            gateway: gateway
                .parse()
                .map_err(|e: libp2p::identity::ParseError| AddressError::Gateway(e.to_string()))?,
            client: ClientId(hex32(client, "client id")?),
            noise_key: hex32(key, "noise key")?,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}:{}:{}:{}",
            self.gateway,
            hex::encode(self.client.0),
            hex::encode(self.noise_key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_ones_say_why() {
        let gateway = PeerId::random();
        let a = Address {
            gateway,
            client: client_id(&PeerId::random()),
            noise_key: [9; 32],
        };
        let text = a.to_string();
        assert_eq!(text.parse::<Address>(), Ok(a));
        assert_eq!("hello".parse::<Address>(), Err(AddressError::Shape));
        assert_eq!(
            text.replacen("p2pmix1", "p2pmix2", 1).parse::<Address>(),
            Err(AddressError::Shape)
        );
        assert!(matches!(
            format!("p2pmix1:nope:{}:{}", "00".repeat(32), "00".repeat(32)).parse::<Address>(),
            Err(AddressError::Gateway(_))
        ));
        assert_eq!(
            format!("p2pmix1:{gateway}:{}:{}", "0".repeat(63), "00".repeat(32)).parse::<Address>(),
            Err(AddressError::Hex("client id"))
        );
    }
}
