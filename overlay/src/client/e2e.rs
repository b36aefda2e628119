//! End-to-end encryption of one fragment to the recipient's static key, with `snow`: Noise N
//! when the sender stays anonymous, Noise X when it wants the recipient to know its static key.
//! One handshake message per fragment (no session: fragments travel independent routes and
//! arrive in any order). The first byte says which pattern follows.

use thiserror::Error;
use zeroize::Zeroizing;

const N: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
const X: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";
const TAG_N: u8 = 1;
const TAG_X: u8 = 2;

/// Bytes added to a plaintext by [`seal`] (pattern byte, ephemeral key, tag; X adds the sealed
/// static key).
pub const fn overhead(known_sender: bool) -> usize {
    if known_sender {
        1 + 32 + 48 + 16
    } else {
        1 + 32 + 16
    }
}

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum E2eError {
    /// Not a message for this key, or tampered with.
    #[error("cannot decrypt: not for this key, or tampered with")]
    Decrypt,
    /// The pattern byte is unknown.
    #[error("unknown encryption pattern {0}")]
    Pattern(u8),
    /// Noise refused the parameters (a bug or a bad key).
    #[error("noise: {0}")]
    Noise(String),
}

/// A client's static X25519 key pair.
pub struct StaticKey {
    secret: Zeroizing<Vec<u8>>,
    public: [u8; 32],
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl StaticKey {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, E2eError> {
        let kp = snow::Builder::new(params(N)?)
            .generate_keypair()
            .map_err(|e| E2eError::Noise(e.to_string()))?;
        let public = kp
            .public
            .as_slice()
            .try_into()
            .map_err(|_| E2eError::Noise("public key size".into()))?;
        Ok(StaticKey {
            secret: Zeroizing::new(kp.private),
            public,
        })
    }

    /// The key pair with this 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> Result<Self, E2eError> {
        let dh = x25519_public(secret)?;
        Ok(StaticKey {
            secret: Zeroizing::new(secret.to_vec()),
            public: dh,
        })
    }

    /// The secret bytes (to store them).
    pub fn secret(&self) -> Zeroizing<Vec<u8>> {
        self.secret.clone()
    }

    /// The public key senders encrypt to.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The client's recipient-layer key (the innermost Sphinx payload layer), derived from this
    /// key's secret under its own context: one secret file keeps both, and the address.
    pub fn recipient_key(&self) -> p2pmix_mix::RecipientKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&self.secret[..32]);
        p2pmix_mix::RecipientKey::from_seed(&seed)
    }
}

fn x25519_public(secret: &[u8; 32]) -> Result<[u8; 32], E2eError> {
    // X25519 public key = clamped secret times the base point (what snow computes too).
    Ok(curve25519_dalek::MontgomeryPoint::mul_base_clamped(*secret).to_bytes())
}

fn params(pattern: &str) -> Result<snow::params::NoiseParams, E2eError> {
    pattern
        .parse()
        .map_err(|e: snow::Error| E2eError::Noise(e.to_string()))
}

/// Encrypts `plaintext` to `recipient`; with `sender` the recipient learns its static key.
pub fn seal(
    recipient: &[u8; 32],
    sender: Option<&StaticKey>,
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    let noise = |e: snow::Error| E2eError::Noise(e.to_string());
    let (tag, builder) = match sender {
        None => (TAG_N, snow::Builder::new(params(N)?)),
        Some(key) => (
            TAG_X,
            snow::Builder::new(params(X)?)
                .local_private_key(&key.secret)
                .map_err(noise)?,
        ),
    };
    let mut state = builder
        .remote_public_key(recipient)
        .map_err(noise)?
        .build_initiator()
        .map_err(noise)?;
    let mut out = vec![0u8; 1 + plaintext.len() + overhead(sender.is_some())];
    out[0] = tag;
    let n = state
        .write_message(plaintext, &mut out[1..])
        .map_err(noise)?;
    out.truncate(1 + n);
    Ok(out)
}

/// Decrypts a message sealed to `key`; returns the plaintext and the sender's static key when
/// it chose to be known.
pub fn open(key: &StaticKey, message: &[u8]) -> Result<(Vec<u8>, Option<[u8; 32]>), E2eError> {
    let (&tag, body) = message.split_first().ok_or(E2eError::Decrypt)?;
    let pattern = match tag {
        TAG_N => N,
        TAG_X => X,
        other => return Err(E2eError::Pattern(other)),
    };
    let mut state = snow::Builder::new(params(pattern)?)
        .local_private_key(&key.secret)
        .map_err(|e| E2eError::Noise(e.to_string()))?
        .build_responder()
        .map_err(|e| E2eError::Noise(e.to_string()))?;
    let mut out = vec![0u8; body.len()];
    let n = state
        .read_message(body, &mut out)
        .map_err(|_| E2eError::Decrypt)?;
    out.truncate(n);
    let sender = state.get_remote_static().and_then(|k| k.try_into().ok());
    Ok((out, sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_and_known_senders() {
        let bob = StaticKey::generate().unwrap();
        let alice = StaticKey::generate().unwrap();
        let sealed = seal(&bob.public(), None, b"hi").unwrap();
        assert_eq!(sealed.len(), 2 + overhead(false));
        assert_eq!(open(&bob, &sealed).unwrap(), (b"hi".to_vec(), None));
        let sealed = seal(&bob.public(), Some(&alice), b"hi").unwrap();
        assert_eq!(sealed.len(), 2 + overhead(true));
        assert_eq!(
            open(&bob, &sealed).unwrap(),
            (b"hi".to_vec(), Some(alice.public()))
        );
        // Someone else cannot read it; a flipped bit is refused.
        assert_eq!(open(&alice, &sealed), Err(E2eError::Decrypt));
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert_eq!(open(&bob, &flipped), Err(E2eError::Decrypt));
        assert_eq!(open(&bob, &[]), Err(E2eError::Decrypt));
        assert_eq!(open(&bob, &[9, 1, 2]), Err(E2eError::Pattern(9)));
        // A key restored from its secret is the same key.
        let restored = StaticKey::from_secret(&bob.secret()[..].try_into().unwrap()).unwrap();
        assert_eq!(restored.public(), bob.public());
    }
}
