//! A client's address: one printable string naming its gateway, its client id (what the gateway
//! files its packets under), its static Noise key (what senders encrypt end to end to) and its
//! recipient-layer key (what senders key the innermost Sphinx payload layer to, so that the
//! gateway sees only random bytes; `p2pmix_mix::RecipientKey`).
//!
//! Form: bech32m (BIP-350) with the human-readable part `p2pmix`, so every address starts with
//! `p2pmix1`; the data is a version byte (1), the gateway's peer id (length-prefixed), the client
//! id (32 bytes), the Noise key (32 bytes) and the recipient-layer key (32 bytes), about 230
//! characters in all. The checksum catches every typo of up to four characters at once and finds
//! where a single one is, so a mistyped address is refused before anything is sent, with the
//! position to look at ([`AddressError::Checksum`]). Addresses from before the recipient layer
//! (version 0, and the unchecked `p2pmix1:<peer id>:<hex>:<hex>` form) cannot be sent to safely
//! and are refused with [`AddressError::Outdated`].

use std::{fmt, str::FromStr};

use bech32::{
    Bech32m, Fe32, Hrp,
    primitives::{
        correction::CorrectableError,
        decode::{CheckedHrpstring, CheckedHrpstringError},
    },
};
use libp2p_identity::PeerId;
use p2pmix_mix::{ClientId, RecipientPublicKey};
use thiserror::Error;

/// The human-readable part of every address.
const HRP: &str = "p2pmix";
/// The prefix of the first, unchecked form (refused: it has no recipient-layer key).
const LEGACY_PREFIX: &str = "p2pmix1:";
/// The version byte of the current form.
const VERSION: u8 = 1;

/// Where and how to reach one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// The gateway the client fetches its packets from.
    pub gateway: PeerId,
    /// The id the gateway files the client's packets under.
    pub client: ClientId,
    /// The client's static X25519 key for end-to-end encryption.
    pub noise_key: [u8; 32],
    /// The client's recipient-layer key (a Ristretto255 element; checked when parsed).
    pub recipient_key: [u8; 32],
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
    /// An address from before the recipient layer: sending to it would show the recipient's
    /// gateway what kind of packet it is.
    #[error("an address from before p2pmix's recipient layer: ask its owner for its current form")]
    Outdated,
    /// The recipient-layer key is not a valid group element.
    #[error("the recipient key is not a valid key")]
    RecipientKey,
    /// The gateway part is not a peer id.
    #[error("the gateway is not a peer id: {0}")]
    Gateway(String),
    /// The data is too short or too long.
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
    /// The recipient-layer key, decoded (parsing checked it; a hand-built address may hold
    /// anything).
    pub fn recipient_public_key(&self) -> Option<RecipientPublicKey> {
        RecipientPublicKey::from_bytes(self.recipient_key)
    }

    fn data(&self) -> Vec<u8> {
        let gateway = self.gateway.to_bytes();
        let mut data = Vec::with_capacity(2 + gateway.len() + 96);
        data.push(VERSION);
        // Peer ids are multihashes of at most 64 bytes.
        data.push(gateway.len() as u8);
        data.extend_from_slice(&gateway);
        data.extend_from_slice(&self.client.0);
        data.extend_from_slice(&self.noise_key);
        data.extend_from_slice(&self.recipient_key);
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
    match version {
        VERSION => {}
        0 => return Err(AddressError::Outdated),
        other => return Err(AddressError::Version(other)),
    }
    let (&len, rest) = rest.split_first().ok_or(AddressError::Hex("gateway"))?;
    let len = usize::from(len);
    if rest.len() != len + 96 {
        return Err(AddressError::Hex("address data"));
    }
    let gateway =
        PeerId::from_bytes(&rest[..len]).map_err(|e| AddressError::Gateway(e.to_string()))?;
    let mut client = [0u8; 32];
    client.copy_from_slice(&rest[len..len + 32]);
    let mut noise_key = [0u8; 32];
    noise_key.copy_from_slice(&rest[len + 32..len + 64]);
    let mut recipient_key = [0u8; 32];
    recipient_key.copy_from_slice(&rest[len + 64..]);
    RecipientPublicKey::from_bytes(recipient_key).ok_or(AddressError::RecipientKey)?;
    Ok(Address {
        gateway,
        client: ClientId(client),
        noise_key,
        recipient_key,
    })
}

impl FromStr for Address {
    type Err = AddressError;

    /// The checksummed form; the forms from before the recipient layer are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() >= LEGACY_PREFIX.len()
            && s[..LEGACY_PREFIX.len()].eq_ignore_ascii_case(LEGACY_PREFIX)
        {
            return Err(AddressError::Outdated);
        }
        parse_checked(s)
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

    fn recipient_key(seed: u8) -> [u8; 32] {
        p2pmix_mix::RecipientKey::from_seed(&[seed; 32])
            .public_key()
            .to_bytes()
    }

    fn sample() -> Address {
        Address {
            gateway: PeerId::random(),
            client: client_id(&PeerId::random()),
            noise_key: [9; 32],
            recipient_key: recipient_key(9),
        }
    }

    #[test]
    fn addresses_round_trip_and_bad_ones_say_why() {
        let a = sample();
        let text = a.to_string();
        assert!(text.starts_with("p2pmix1"), "{text}");
        assert!(text.len() < 240, "{} characters", text.len());
        assert_eq!(text.parse::<Address>(), Ok(a));
        assert_eq!(text.to_uppercase().parse::<Address>(), Ok(a), "one case");
        assert_eq!("hello".parse::<Address>(), Err(AddressError::Shape));
        let other_hrp = bech32::encode::<Bech32m>(Hrp::parse("other").unwrap(), &a.data()).unwrap();
        assert_eq!(other_hrp.parse::<Address>(), Err(AddressError::Shape));
        let mut future = a.data();
        future[0] = 7;
        let future = bech32::encode::<Bech32m>(Hrp::parse(HRP).unwrap(), &future).unwrap();
        assert_eq!(future.parse::<Address>(), Err(AddressError::Version(7)));
        let mut bad_key = a.data();
        let n = bad_key.len();
        bad_key[n - 32..].fill(0xff);
        let bad_key = bech32::encode::<Bech32m>(Hrp::parse(HRP).unwrap(), &bad_key).unwrap();
        assert_eq!(bad_key.parse::<Address>(), Err(AddressError::RecipientKey));
    }

    #[test]
    fn addresses_from_before_the_recipient_layer_are_refused() {
        let a = sample();
        let legacy = format!(
            "p2pmix1:{}:{}:{}",
            a.gateway,
            hex::encode(a.client.0),
            hex::encode(a.noise_key)
        );
        assert_eq!(legacy.parse::<Address>(), Err(AddressError::Outdated));
        // Version 0: the same fields without the recipient key.
        let mut v0 = a.data();
        v0.truncate(v0.len() - 32);
        v0[0] = 0;
        let v0 = bech32::encode::<Bech32m>(Hrp::parse(HRP).unwrap(), &v0).unwrap();
        assert_eq!(v0.parse::<Address>(), Err(AddressError::Outdated));
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
                recipient_key: recipient_key(seed[0]),
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
