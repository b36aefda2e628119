//! Why an authority refuses a request: the errors, their stable labels for counters, and the
//! codes they carry on the wire.
//!
//! The label ([`Rejection::reason`]) is what operators count and alert on, so it never changes
//! once released; the code ([`Rejection::code`]) is what a requester acts on (retry, give up,
//! treat as held), so it is coarse; the text is for people.

use p2pmix_proto::v1::{RefusalCode, Refused};
use thiserror::Error;

use crate::{descriptor::DescriptorError, vote::VoteError};

/// Why a signature from another authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not by a pinned authority.
    #[error("not from a pinned authority")]
    UnknownAuthority,
    /// Does not verify.
    #[error("bad signature")]
    BadSignature,
    /// This authority already signed.
    #[error("duplicate")]
    Duplicate,
    /// Malformed digest.
    #[error("malformed")]
    Malformed,
    /// For another epoch than the round's (a replay of a published document's signature).
    #[error("signature for epoch {got}, expected {expected}")]
    WrongEpoch {
        /// The signature's epoch.
        got: u64,
        /// The epoch being prepared.
        expected: u64,
    },
    /// The authority signed another digest for this epoch: kept as proof of equivocation (the
    /// first time) and never counted.
    #[error("the authority signed another digest for this epoch")]
    Equivocation,
}

/// Why a request was refused. Every refusal is counted by [`Rejection::reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A node descriptor was refused.
    #[error("descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// A vote or reveal was refused.
    #[error("vote: {0}")]
    Vote(#[from] VoteError),
    /// A consensus signature was refused.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The request is empty or not one an authority takes.
    #[error("unsupported request")]
    Unsupported,
    /// The sender's address sent more requests than it may.
    #[error("too many requests from this address")]
    RateLimited,
}

impl Rejection {
    /// The code a refusal carries on the wire: what the requester acts on.
    pub fn code(&self) -> RefusalCode {
        match self {
            Rejection::Descriptor(e) => match e {
                DescriptorError::Malformed
                | DescriptorError::BadIdentity
                | DescriptorError::NoRole => RefusalCode::Malformed,
                DescriptorError::BadSignature => RefusalCode::BadSignature,
                DescriptorError::WrongEpoch { .. } => RefusalCode::WrongEpoch,
                DescriptorError::KeyTooFarAhead { .. }
                | DescriptorError::BadSphinxKey(_)
                | DescriptorError::VersionTooLow { .. }
                | DescriptorError::BadAddresses
                | DescriptorError::NotPublicAddress => RefusalCode::Invalid,
                DescriptorError::Duplicate => RefusalCode::Duplicate,
                DescriptorError::Late => RefusalCode::Late,
                DescriptorError::Full | DescriptorError::GroupFull(_) => RefusalCode::Full,
            },
            Rejection::Vote(e) => match e {
                VoteError::Malformed | VoteError::Unsorted | VoteError::BadMeasurements => {
                    RefusalCode::Malformed
                }
                VoteError::UnknownAuthority => RefusalCode::UnknownAuthority,
                VoteError::BadSignature => RefusalCode::BadSignature,
                VoteError::WrongEpoch { .. } => RefusalCode::WrongEpoch,
                VoteError::CommitMismatch | VoteError::Equivocator => RefusalCode::Invalid,
                VoteError::Duplicate => RefusalCode::Duplicate,
                VoteError::Late => RefusalCode::Late,
            },
            Rejection::Signature(e) => match e {
                SignatureError::UnknownAuthority => RefusalCode::UnknownAuthority,
                SignatureError::BadSignature => RefusalCode::BadSignature,
                SignatureError::Duplicate => RefusalCode::Duplicate,
                SignatureError::Malformed => RefusalCode::Malformed,
                SignatureError::WrongEpoch { .. } => RefusalCode::WrongEpoch,
                SignatureError::Equivocation => RefusalCode::Invalid,
            },
            Rejection::Unsupported => RefusalCode::Unsupported,
            Rejection::RateLimited => RefusalCode::RateLimited,
        }
    }

    /// Whether the refusal was decided before the request could touch anything the authority
    /// persists (over the rate limit, or not a request it takes): its driver need not write
    /// the state for it, so a flood past the rate limit costs no disk writes. Every other
    /// refusal may have kept something (a proof of equivocation, say) and counts as a change.
    pub fn left_state_alone(&self) -> bool {
        matches!(self, Rejection::RateLimited | Rejection::Unsupported)
    }

    /// The refusal as it goes on the wire: the code, and the text for people.
    pub fn to_refused(&self) -> Refused {
        Refused {
            reason: self.to_string(),
            code: self.code() as i32,
        }
    }

    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Descriptor(e) => match e {
                DescriptorError::Malformed => "descriptor_malformed",
                DescriptorError::BadIdentity => "descriptor_bad_identity",
                DescriptorError::BadSignature => "descriptor_bad_signature",
                DescriptorError::WrongEpoch { .. } => "descriptor_wrong_epoch",
                DescriptorError::KeyTooFarAhead { .. } => "descriptor_key_too_far_ahead",
                DescriptorError::BadSphinxKey(_) => "descriptor_bad_sphinx_key",
                DescriptorError::NoRole => "descriptor_no_role",
                DescriptorError::VersionTooLow { .. } => "descriptor_version_too_low",
                DescriptorError::BadAddresses => "descriptor_bad_addresses",
                DescriptorError::Duplicate => "descriptor_duplicate",
                DescriptorError::Late => "descriptor_late",
                DescriptorError::NotPublicAddress => "descriptor_address_not_public",
                DescriptorError::Full => "descriptor_round_full",
                DescriptorError::GroupFull("ipv4") => "descriptor_full_ipv4",
                DescriptorError::GroupFull("ipv4_24") => "descriptor_full_ipv4_24",
                DescriptorError::GroupFull("ipv6_48") => "descriptor_full_ipv6_48",
                DescriptorError::GroupFull(_) => "descriptor_full_family",
            },
            Rejection::Vote(e) => match e {
                VoteError::Malformed => "vote_malformed",
                VoteError::UnknownAuthority => "vote_unknown_authority",
                VoteError::BadSignature => "vote_bad_signature",
                VoteError::WrongEpoch { .. } => "vote_wrong_epoch",
                VoteError::Unsorted => "vote_unsorted",
                VoteError::BadMeasurements => "vote_bad_measurements",
                VoteError::CommitMismatch => "vote_commit_mismatch",
                VoteError::Duplicate => "vote_duplicate",
                VoteError::Late => "vote_late",
                VoteError::Equivocator => "vote_from_equivocator",
            },
            Rejection::Signature(e) => match e {
                SignatureError::UnknownAuthority => "signature_unknown_authority",
                SignatureError::BadSignature => "signature_bad",
                SignatureError::Duplicate => "signature_duplicate",
                SignatureError::Malformed => "signature_malformed",
                SignatureError::WrongEpoch { .. } => "signature_wrong_epoch",
                SignatureError::Equivocation => "signature_equivocation",
            },
            Rejection::Unsupported => "unsupported",
            Rejection::RateLimited => "rate_limited",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_its_code_and_its_text() {
        // Nodes treat an upload refused as a duplicate as held: that code must stay put.
        let duplicate = Rejection::Descriptor(DescriptorError::Duplicate);
        let refused = duplicate.to_refused();
        assert_eq!(refused.code, RefusalCode::Duplicate as i32);
        assert_eq!(refused.reason, duplicate.to_string());
        assert_eq!(duplicate.reason(), "descriptor_duplicate");
        assert_eq!(
            Rejection::Signature(SignatureError::BadSignature).code(),
            RefusalCode::BadSignature
        );
        assert_eq!(Rejection::Unsupported.code(), RefusalCode::Unsupported);
    }
}
