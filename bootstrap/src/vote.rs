//! Votes and reveals: what authorities exchange to agree on a consensus.
//!
//! A vote lists the descriptors an authority accepted and commits to a random value; once every
//! vote is in, authorities reveal the values, and the hash of all revealed values (the shared
//! random value) seeds the layer assignment, so no single authority chooses who sits where.

use std::sync::Arc;

use libp2p_identity::Keypair;
use p2pmix_proto::v1::{
    NetworkParameters, Reveal, SignedDescriptor, SignedReveal, SignedVote, Vote,
};
use prost::Message;
use thiserror::Error;

use crate::{
    authorities::PinnedAuthorities,
    descriptor::{VerifiedDescriptor, verify_descriptor},
    signing::{Context, encode_and_sign, verify},
};

/// Largest encoded vote accepted (bytes): room for about 25 000 descriptors of the usual size
/// (~330 bytes: one address, two Sphinx keys). An authority's own vote never exceeds it: when
/// more candidates qualify than fit, it keeps the best ranked ones (docs/consensus.md).
pub const MAX_VOTE_BYTES: usize = 8 * 1024 * 1024;

/// Room kept in a vote for everything but the descriptors (epoch, authority key, commitment,
/// previous digest, encoding overhead).
pub const VOTE_HEADER_BYTES: usize = 1024;

/// What one descriptor adds to an encoded vote.
pub fn vote_entry_bytes(descriptor: &SignedDescriptor) -> usize {
    let len = descriptor.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Why a vote or reveal was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VoteError {
    /// Not a vote or reveal, or too large.
    #[error("malformed vote or reveal")]
    Malformed,
    /// Signed by a key that is not a pinned authority.
    #[error("not from a pinned authority")]
    UnknownAuthority,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// For another epoch than the one being prepared.
    #[error("for epoch {got}, expected {expected}")]
    WrongEpoch {
        /// The message's epoch.
        got: u64,
        /// The epoch being prepared.
        expected: u64,
    },
    /// Descriptors are not sorted and unique.
    #[error("descriptors not sorted")]
    Unsorted,
    /// The revealed value does not match the vote's commitment.
    #[error("reveal does not match the commitment")]
    CommitMismatch,
    /// The authority already sent one for this epoch.
    #[error("duplicate")]
    Duplicate,
    /// Arrived after its phase.
    #[error("arrived after its phase")]
    Late,
    /// From an authority already caught sending two different votes this round: not checked,
    /// not kept, not relayed.
    #[error("from an authority caught equivocating")]
    Equivocator,
}

/// The commitment to an authority's random value for `epoch`.
pub fn commitment(epoch: u64, authority: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("p2pmix 2026-11 shared random commit v1");
    h.update(&epoch.to_le_bytes());
    h.update(&(authority.len() as u64).to_le_bytes());
    h.update(authority);
    h.update(value);
    *h.finalize().as_bytes()
}

/// Builds and signs a vote; `descriptors` are sorted here.
pub fn build_vote(
    keypair: &Keypair,
    epoch: u64,
    descriptors: impl IntoIterator<Item = SignedDescriptor>,
    commit: [u8; 32],
    previous: Option<[u8; 32]>,
) -> Option<SignedVote> {
    let mut descriptors: Vec<SignedDescriptor> = descriptors.into_iter().collect();
    descriptors.sort_by(|a, b| a.descriptor.cmp(&b.descriptor));
    descriptors.dedup_by(|a, b| a.descriptor == b.descriptor);
    let vote = Vote {
        epoch,
        authority: keypair.public().encode_protobuf(),
        descriptors,
        commit: commit.to_vec(),
        previous: previous.map(|d| d.to_vec()).unwrap_or_default(),
    };
    let (vote, signature) = encode_and_sign(keypair, Context::Vote, &vote)?;
    Some(SignedVote { vote, signature })
}

/// A vote from a pinned authority, with the descriptors in it that verify.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedVote {
    /// As received (relayed unchanged to other authorities).
    pub signed: SignedVote,
    /// The voter's key encoding.
    pub authority: Vec<u8>,
    /// The commitment to the voter's random value.
    pub commit: Vec<u8>,
    /// The digest of the previous consensus the voter holds (empty if none).
    pub previous: Vec<u8>,
    /// The descriptors in the vote that verify for the epoch; invalid ones are ignored.
    /// Shared with whoever holds the same descriptor (see [`verify_vote_reusing`]).
    pub descriptors: Vec<Arc<VerifiedDescriptor>>,
}

/// Checks a vote for `epoch`; descriptors inside are checked too and bad ones dropped.
pub fn verify_vote(
    signed: &SignedVote,
    authorities: &PinnedAuthorities,
    epoch: u64,
    parameters: &NetworkParameters,
) -> Result<VerifiedVote, VoteError> {
    verify_vote_reusing(signed, authorities, epoch, parameters, |_| None)
}

/// [`verify_vote`], taking from `known` the descriptors already verified elsewhere (an
/// authority's own store): a descriptor `known` returns for the same signed bytes is neither
/// checked nor decoded again, and shares its memory.
pub fn verify_vote_reusing(
    signed: &SignedVote,
    authorities: &PinnedAuthorities,
    epoch: u64,
    parameters: &NetworkParameters,
    known: impl Fn(&SignedDescriptor) -> Option<Arc<VerifiedDescriptor>>,
) -> Result<VerifiedVote, VoteError> {
    let vote = open_vote(signed, authorities, epoch)?;
    if vote
        .descriptors
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.descriptor >= b.descriptor))
    {
        return Err(VoteError::Unsorted);
    }
    let descriptors = vote
        .descriptors
        .iter()
        .filter_map(|d| {
            known(d)
                .filter(|k| k.signed == *d)
                .or_else(|| verify_descriptor(d, epoch, parameters).ok().map(Arc::new))
        })
        .collect();
    Ok(VerifiedVote {
        signed: signed.clone(),
        authority: vote.authority,
        commit: vote.commit,
        previous: vote.previous,
        descriptors,
    })
}

/// Checks a vote's size, author, signature and epoch, not the descriptors inside (what telling
/// equivocation apart needs).
pub fn open_vote(
    signed: &SignedVote,
    authorities: &PinnedAuthorities,
    epoch: u64,
) -> Result<Vote, VoteError> {
    if signed.vote.len() > MAX_VOTE_BYTES {
        return Err(VoteError::Malformed);
    }
    open_signed(
        &signed.vote,
        &signed.signature,
        Context::Vote,
        authorities,
        epoch,
        |v: &Vote| (&v.authority, v.epoch),
    )
}

/// Who a vote says it is from, without checking anything (a cheap first look: the vote of an
/// authority already caught equivocating is refused before any signature is checked).
pub fn vote_author(signed: &SignedVote) -> Result<Vec<u8>, VoteError> {
    // Only the author field is kept; descriptors are skipped by the decoder, not copied.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Author {
        #[prost(bytes = "vec", tag = "2")]
        authority: Vec<u8>,
    }
    if signed.vote.len() > MAX_VOTE_BYTES {
        return Err(VoteError::Malformed);
    }
    Author::decode(&signed.vote[..])
        .map(|a| a.authority)
        .map_err(|_| VoteError::Malformed)
}

/// Builds and signs the reveal of `value`.
pub fn build_reveal(keypair: &Keypair, epoch: u64, value: [u8; 32]) -> Option<SignedReveal> {
    let reveal = Reveal {
        epoch,
        authority: keypair.public().encode_protobuf(),
        value: value.to_vec(),
    };
    let (reveal, signature) = encode_and_sign(keypair, Context::Reveal, &reveal)?;
    Some(SignedReveal { reveal, signature })
}

/// A reveal from a pinned authority.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedReveal {
    /// As received.
    pub signed: SignedReveal,
    /// The revealer's key encoding.
    pub authority: Vec<u8>,
    /// The revealed value.
    pub value: Vec<u8>,
}

/// Checks a reveal for `epoch` (matching it against the commitment is the caller's, once the
/// vote is known).
pub fn verify_reveal(
    signed: &SignedReveal,
    authorities: &PinnedAuthorities,
    epoch: u64,
) -> Result<VerifiedReveal, VoteError> {
    let reveal: Reveal = open_signed(
        &signed.reveal,
        &signed.signature,
        Context::Reveal,
        authorities,
        epoch,
        |r: &Reveal| (&r.authority, r.epoch),
    )?;
    if reveal.value.len() != 32 {
        return Err(VoteError::Malformed);
    }
    Ok(VerifiedReveal {
        signed: signed.clone(),
        authority: reveal.authority,
        value: reveal.value,
    })
}

/// Decodes `bytes` as `M`, then checks that the authority it names is pinned, signed exactly
/// these bytes under `context`, and that it is for `epoch`.
fn open_signed<M: Message + Default>(
    bytes: &[u8],
    signature: &[u8],
    context: Context,
    authorities: &PinnedAuthorities,
    epoch: u64,
    fields: impl Fn(&M) -> (&Vec<u8>, u64),
) -> Result<M, VoteError> {
    let message = M::decode(bytes).map_err(|_| VoteError::Malformed)?;
    let (authority, got) = fields(&message);
    let key = authorities
        .get(authority)
        .ok_or(VoteError::UnknownAuthority)?;
    if !verify(key, context, bytes, signature) {
        return Err(VoteError::BadSignature);
    }
    if got != epoch {
        return Err(VoteError::WrongEpoch {
            got,
            expected: epoch,
        });
    }
    Ok(message)
}
