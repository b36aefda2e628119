//! A client's address: one printable string naming its gateway, its client id (what the gateway
//! files its packets under) and its static Noise key (what senders encrypt to).
//!
//! Form: bech32m (BIP-350) with the human-readable part `p2pmix`, so every address starts with
//! `p2pmix1`; the data is a version byte (0), the gateway's peer id (length-prefixed), the client
//! id (32 bytes) and the Noise key (32 bytes), about 180 characters in all. The checksum catches
//! every typo of up to four characters at once and finds where a single one is, so a mistyped
//! address is refused before anything is sent, with the position to look at
//! ([`AddressError::Checksum`]). The first form, `p2pmix1:<peer id>:<64 hex>:<64 hex>` (no
//! checksum), is still read for a while ([`Address::parse_any`] says which form it was).

use std::{fmt, str::FromStr};

use bech32::{
    Bech32m, Fe32, Hrp,
    primitives::{
        correction::CorrectableError,
        decode::{CheckedHrpstring, CheckedHrpstringError},
    },
};
use libp2p::PeerId;
use p2pmix_mix::ClientId;
use thiserror::Error;

/// The human-readable part of every address.
const HRP: &str = "p2pmix";
/// The prefix of the first, unchecked form.
const LEGACY_PREFIX: &str = "p2pmix1:";
/// The version byte of the current form.
const VERSION: u8 = 0;

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

/// Which form a parsed address had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressForm {
    /// The checksummed bech32m form.
    Checked,
    /// The first form, without a checksum (deprecated: a typo in it goes unnoticed).
    Legacy,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The checksum does not match: a typo. `position` is the character (counting from 1) that
    /// is wrong, when the checksum can tell (one or two typos).
    #[error("{}", checksum_message(*.position))]
    Checksum {
        /// The wrong character's position, from 1, when known.
        position: Option<usize>,
    },
    /// A character that no address contains (bech32 leaves out `1`, `b`, `i` and `o` after the
    /// prefix), at `position` (from 1).
    #[error("the address has a typo: character {position} ({found:?}) cannot appear in an address")]
    Character {
        /// The character's position, from 1.
        position: usize,
        /// The character.
        found: char,
    },
    /// Not an address of this kind at all.
    #[error("an address looks like p2pmix1… (bech32m, about 180 characters)")]
    Shape,
    /// A version this build does not know.
    #[error("address version {0} is not known to this build")]
    Version(u8),
    /// The gateway part is not a peer id.
    #[error("the gateway is not a peer id: {0}")]
    Gateway(String),
    /// A key part is not 64 hex digits (first form) or the data is too short or too long.
    #[error("the {0} is malformed")]
    Hex(&'static str),
}

fn checksum_message(position: Option<usize>) -> String {
    match position {
        Some(p) => format!("the address has a typo: check character {p}"),
        None => "the address has a typo (its checksum does not match)".into(),
    }
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

/// The position (from 1) of the single wrong character in `s`, if the checksum can locate it.
fn locate_typo(s: &str, error: &CheckedHrpstringError) -> Option<usize> {
    let corrector = error.correction_context::<Bech32m>()?;
    let errors: Vec<(usize, Fe32)> = corrector.bch_errors()?.collect();
    // Positions count from the end of the string; only a sure single location is worth naming.
    match errors[..] {
        [(from_end, _)] => s.chars().count().checked_sub(from_end),
        _ => None,
    }
}

impl Address {
    /// Parses either form, saying which it was (a program can warn about the legacy one).
    pub fn parse_any(s: &str) -> Result<(Address, AddressForm), AddressError> {
        let s = s.trim();
        if s.len() >= LEGACY_PREFIX.len()
            && s[..LEGACY_PREFIX.len()].eq_ignore_ascii_case(LEGACY_PREFIX)
        {
            return parse_legacy(s).map(|a| (a, AddressForm::Legacy));
        }
        parse_checked(s).map(|a| (a, AddressForm::Checked))
    }

    fn data(&self) -> Vec<u8> {
        let gateway = self.gateway.to_bytes();
        let mut data = Vec::with_capacity(2 + gateway.len() + 64);
        data.push(VERSION);
        // Peer ids are multihashes of at most 64 bytes.
        data.push(gateway.len() as u8);
        data.extend_from_slice(&gateway);
        data.extend_from_slice(&self.client.0);
        data.extend_from_slice(&self.noise_key);
        data
    }
}

/// The characters of the data part of a bech32 string.
const CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn parse_checked(s: &str) -> Result<Address, AddressError> {
    // A character outside the alphabet is a typo too: say where (the checksum cannot).
    let prefix = HRP.len() + 1;
    if s.len() > prefix
        && s[..prefix].eq_ignore_ascii_case("p2pmix1")
        && let Some((i, c)) = s
            .char_indices()
            .skip(prefix)
            .find(|(_, c)| !CHARSET.contains(c.to_ascii_lowercase()))
    {
        return Err(AddressError::Character {
            position: i + 1,
            found: c,
        });
    }
    let checked = CheckedHrpstring::new::<Bech32m>(s).map_err(|e| match &e {
        CheckedHrpstringError::Checksum(_) => AddressError::Checksum {
            position: locate_typo(s, &e),
        },
        _ => AddressError::Shape,
    })?;
    if !checked.hrp().as_str().eq_ignore_ascii_case(HRP) {
        return Err(AddressError::Shape);
    }
    let data: Vec<u8> = checked.byte_iter().collect();
    let (&version, rest) = data.split_first().ok_or(AddressError::Shape)?;
    if version != VERSION {
        return Err(AddressError::Version(version));
    }
    let (&len, rest) = rest.split_first().ok_or(AddressError::Hex("gateway"))?;
    let len = usize::from(len);
    if rest.len() != len + 64 {
        return Err(AddressError::Hex("address data"));
    }
    let gateway =
        PeerId::from_bytes(&rest[..len]).map_err(|e| AddressError::Gateway(e.to_string()))?;
    let mut client = [0u8; 32];
    client.copy_from_slice(&rest[len..len + 32]);
    let mut noise_key = [0u8; 32];
    noise_key.copy_from_slice(&rest[len + 32..]);
    Ok(Address {
        gateway,
        client: ClientId(client),
        noise_key,
    })
}

fn parse_legacy(s: &str) -> Result<Address, AddressError> {
    let parts: Vec<&str> = s.split(':').collect();
    let [_, gateway, client, key] = parts.as_slice() else {
        return Err(AddressError::Shape);
    };
    Ok(Address {
        gateway: gateway
            .parse()
            .map_err(|e: libp2p::identity::ParseError| AddressError::Gateway(e.to_string()))?,
        client: ClientId(hex32(client, "client id")?),
        noise_key: hex32(key, "noise key")?,
    })
}

impl FromStr for Address {
    type Err = AddressError;

    /// Either form; the legacy one with a deprecation warning in the log.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, form) = Address::parse_any(s)?;
        if form == AddressForm::Legacy {
            tracing::warn!(
                "an address in the old p2pmix1:… form (no checksum): ask for its new form, \
                 which catches typos ({address})"
            );
        }
        Ok(address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The HRP is a constant that parses and the data is about 100 bytes, far below the code
        // length of 1023 characters: encoding cannot fail.
        let hrp = Hrp::parse(HRP).map_err(|_| fmt::Error)?;
        bech32::encode_lower_to_fmt::<Bech32m, _>(f, hrp, &self.data()).map_err(|_| fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Address {
        Address {
            gateway: PeerId::random(),
            client: client_id(&PeerId::random()),
            noise_key: [9; 32],
        }
    }

    #[test]
    fn addresses_round_trip_and_bad_ones_say_why() {
        let a = sample();
        let text = a.to_string();
        assert!(text.starts_with("p2pmix1"), "{text}");
        assert!(text.len() < 200, "{} characters", text.len());
        assert_eq!(text.parse::<Address>(), Ok(a));
        assert_eq!(text.to_uppercase().parse::<Address>(), Ok(a), "one case");
        assert_eq!("hello".parse::<Address>(), Err(AddressError::Shape));
        let other_hrp = bech32::encode::<Bech32m>(Hrp::parse("other").unwrap(), &a.data()).unwrap();
        assert_eq!(other_hrp.parse::<Address>(), Err(AddressError::Shape));
        let mut future = a.data();
        future[0] = 7;
        let future = bech32::encode::<Bech32m>(Hrp::parse(HRP).unwrap(), &future).unwrap();
        assert_eq!(future.parse::<Address>(), Err(AddressError::Version(7)));
    }

    #[test]
    fn the_legacy_form_is_still_read_and_said_to_be_legacy() {
        let a = sample();
        let legacy = format!(
            "p2pmix1:{}:{}:{}",
            a.gateway,
            hex::encode(a.client.0),
            hex::encode(a.noise_key)
        );
        assert_eq!(Address::parse_any(&legacy), Ok((a, AddressForm::Legacy)));
        assert_eq!(
            Address::parse_any(&a.to_string()),
            Ok((a, AddressForm::Checked))
        );
        assert!(matches!(
            format!("p2pmix1:nope:{}:{}", "00".repeat(32), "00".repeat(32)).parse::<Address>(),
            Err(AddressError::Gateway(_))
        ));
        assert_eq!(
            format!(
                "p2pmix1:{}:{}:{}",
                a.gateway,
                "0".repeat(63),
                "00".repeat(32)
            )
            .parse::<Address>(),
            Err(AddressError::Hex("client id"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A one-character change anywhere in an address is refused with a checksum error that
        /// names the changed character.
        #[test]
        fn every_single_typo_is_caught_and_located(
            seed in any::<[u8; 32]>(),
            pick in any::<usize>(),
            replacement in 0usize..32,
        ) {
            let a = Address {
                gateway: PeerId::random(),
                client: ClientId(seed),
                noise_key: seed,
            };
            let text = a.to_string();
            // Any character after the "p2pmix1" prefix (a change in the prefix is a Shape error).
            let i = HRP.len() + 1 + pick % (text.len() - HRP.len() - 1);
            let mut bytes = text.clone().into_bytes();
            let new = CHARSET.as_bytes()[replacement];
            prop_assume!(bytes[i] != new);
            bytes[i] = new;
            let typo = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(
                typo.parse::<Address>(),
                Err(AddressError::Checksum { position: Some(i + 1) })
            );
        }

        /// A character no address can hold is named with its position.
        #[test]
        fn a_character_outside_the_alphabet_is_named(pick in any::<usize>(), bad in 0usize..4) {
            let text = sample().to_string();
            let i = HRP.len() + 1 + pick % (text.len() - HRP.len() - 1);
            let mut bytes = text.into_bytes();
            bytes[i] = b"1bio"[bad];
            let typo = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(
                typo.parse::<Address>(),
                Err(AddressError::Character { position: i + 1, found: b"1bio"[bad] as char })
            );
        }
    }
}
