//! The directory protocol on libp2p: `/p2pmix/dir/1.0.0`, request-response with one protobuf
//! message per stream (a 4-byte big-endian length, then the prost encoding).
//!
//! It carries descriptor uploads (node -> authorities), votes, reveals and signatures between
//! authorities, and consensus fetches from an authority or from any node that holds one. One
//! stream per request suits these rare control messages; Sphinx packets use their own protocol.

use std::{io, marker::PhantomData, time::Duration};

use futures::{
    AsyncReadExt, AsyncWriteExt,
    io::{AsyncRead, AsyncWrite},
};
use libp2p_request_response::{self as request_response, ProtocolSupport};
use libp2p_swarm::StreamProtocol;
use p2pmix_proto::v1::{DirectoryRequest, DirectoryResponse};
use prost::Message;

/// The protocol name.
pub const DIRECTORY_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/dir/1.0.0");

/// The authorities' own protocol: the same messages, between pinned authorities only (votes,
/// reveals, signatures and the documents they ask each other for), the only place requests of
/// up to [`MAX_MESSAGE_BYTES`] are read. An authority offers it to pinned peers alone.
pub const AUTHORITY_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/dir-authority/1.0.0");

/// Largest message either side reads (a signed consensus of ~65 000 nodes, or a vote).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Largest request an authority reads on [`DIRECTORY_PROTOCOL`], where anyone may ask: a signed
/// descriptor (at most [`MAX_DESCRIPTOR_BYTES`](crate::MAX_DESCRIPTOR_BYTES) and its
/// signature) is the biggest request a node or client sends.
pub const MAX_PUBLIC_REQUEST_BYTES: usize = 16 * 1024;

/// Largest request a consensus cache (a node that is not an authority) reads: it serves only
/// `GetConsensus` and `GetEvidence`, a few bytes each, so that nobody makes every node of the
/// network buffer 32 MiB a stream (uploads, votes and signatures go to authorities only).
pub const MAX_CACHE_REQUEST_BYTES: usize = 4 * 1024;

/// Length-prefixed protobuf codec for one request and one response type, writing at most `MAX`
/// bytes per message and reading at most `MAX` per response and `MAX_REQUEST` per request
/// (what this side serves may be smaller than what it asks others for). Other
/// request-response protocols of p2pmix (the gateway mailbox) use it with their own types and
/// bounds.
pub struct ProtoCodec<
    Req,
    Resp,
    const MAX: usize = MAX_MESSAGE_BYTES,
    const MAX_REQUEST: usize = MAX_MESSAGE_BYTES,
> {
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp, const MAX: usize, const MAX_REQUEST: usize> Default
    for ProtoCodec<Req, Resp, MAX, MAX_REQUEST>
{
    fn default() -> Self {
        ProtoCodec {
            _types: PhantomData,
        }
    }
}

impl<Req, Resp, const MAX: usize, const MAX_REQUEST: usize> Clone
    for ProtoCodec<Req, Resp, MAX, MAX_REQUEST>
{
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp, const MAX: usize, const MAX_REQUEST: usize> std::fmt::Debug
    for ProtoCodec<Req, Resp, MAX, MAX_REQUEST>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtoCodec")
    }
}

/// Length-prefixed protobuf codec for [`DirectoryRequest`] / [`DirectoryResponse`] on
/// [`DIRECTORY_PROTOCOL`]: documents of up to [`MAX_MESSAGE_BYTES`] read, requests of at most
/// [`MAX_PUBLIC_REQUEST_BYTES`].
pub type DirectoryCodec =
    ProtoCodec<DirectoryRequest, DirectoryResponse, MAX_MESSAGE_BYTES, MAX_PUBLIC_REQUEST_BYTES>;

/// The codec of [`AUTHORITY_PROTOCOL`]: requests of up to [`MAX_MESSAGE_BYTES`] (votes).
pub type PeerCodec = ProtoCodec<DirectoryRequest, DirectoryResponse>;

/// [`DirectoryCodec`] as a consensus cache serves it: requests of at most
/// [`MAX_CACHE_REQUEST_BYTES`].
pub type CacheCodec =
    ProtoCodec<DirectoryRequest, DirectoryResponse, MAX_MESSAGE_BYTES, MAX_CACHE_REQUEST_BYTES>;

async fn read_message<T, M>(io: &mut T, max: usize) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: Message + Default,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    // Grow the buffer with the data that actually arrives, not with what the prefix claims.
    let mut buf = Vec::new();
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "message cut short",
        ));
    }
    M::decode(&buf[..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_message<T, M>(io: &mut T, message: &M, max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Message,
{
    let bytes = message.encode_to_vec();
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= max)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Resp, const MAX: usize, const MAX_REQUEST: usize> request_response::Codec
    for ProtoCodec<Req, Resp, MAX, MAX_REQUEST>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, MAX_REQUEST).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, MAX).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req, MAX).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, MAX).await
    }
}

/// The directory behaviour: request-response over [`DirectoryCodec`].
pub type DirectoryBehaviour = request_response::Behaviour<DirectoryCodec>;

/// The directory behaviour of a consensus cache: it serves with [`CacheCodec`].
pub type CacheBehaviour = request_response::Behaviour<CacheCodec>;

/// The authorities' behaviour among themselves: request-response over [`PeerCodec`] on
/// [`AUTHORITY_PROTOCOL`]. Offer it to pinned peers only (the overlay's authority driver wraps
/// it so): its requests may be 32 MiB.
pub type PeerBehaviour = request_response::Behaviour<PeerCodec>;

/// A directory behaviour that serves (`serve = true`: authorities) or only asks (light
/// clients), with a request timeout.
pub fn directory_behaviour(serve: bool, timeout: Duration) -> DirectoryBehaviour {
    let support = if serve {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        DirectoryCodec::default(),
        [(DIRECTORY_PROTOCOL, support)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

/// The directory behaviour of a node that is not an authority: it asks authorities (uploads,
/// fetches) and serves the consensus it holds, reading requests of at most
/// [`MAX_CACHE_REQUEST_BYTES`].
pub fn cache_behaviour(timeout: Duration) -> CacheBehaviour {
    request_response::Behaviour::with_codec(
        CacheCodec::default(),
        [(DIRECTORY_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

/// [`PeerBehaviour`] with a request timeout.
pub fn peer_behaviour(timeout: Duration) -> PeerBehaviour {
    request_response::Behaviour::with_codec(
        PeerCodec::default(),
        [(AUTHORITY_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

#[cfg(test)]
mod tests {
    use futures::{executor::block_on, io::Cursor};
    use p2pmix_proto::v1::{GetConsensus, SignedDescriptor, directory_request::Request};
    use request_response::Codec;

    use super::*;

    fn framed(request: &DirectoryRequest) -> Vec<u8> {
        let bytes = request.encode_to_vec();
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        framed
    }

    fn read<C: Codec<Protocol = StreamProtocol, Request = DirectoryRequest> + Default>(
        bytes: Vec<u8>,
    ) -> io::Result<DirectoryRequest> {
        block_on(C::default().read_request(&DIRECTORY_PROTOCOL, &mut Cursor::new(bytes)))
    }

    fn descriptor_of(len: usize) -> DirectoryRequest {
        DirectoryRequest {
            request: Some(Request::Descriptor(SignedDescriptor {
                descriptor: vec![0; len],
                signature: vec![0; 64],
            })),
        }
    }

    /// Refused on the length prefix, before anything past it is read or buffered.
    fn refused<C: Codec<Protocol = StreamProtocol, Request = DirectoryRequest> + Default>(
        request: &DirectoryRequest,
    ) -> bool {
        let mut prefix_only = framed(request);
        prefix_only.truncate(4);
        matches!(read::<C>(prefix_only), Err(e) if e.kind() == io::ErrorKind::InvalidData)
            && matches!(read::<C>(framed(request)), Err(e) if e.kind() == io::ErrorKind::InvalidData)
    }

    #[test]
    fn each_side_reads_requests_only_as_big_as_what_it_serves() {
        let ask = DirectoryRequest {
            request: Some(Request::GetConsensus(GetConsensus { epoch: 7 })),
        };
        let descriptor = descriptor_of(crate::MAX_DESCRIPTOR_BYTES);
        let vote_sized = descriptor_of(1024 * 1024);

        // A consensus cache (any node) serves fetches only.
        assert_eq!(read::<CacheCodec>(framed(&ask)).unwrap(), ask);
        assert!(refused::<CacheCodec>(&descriptor));

        // An authority, to anyone: fetches and the biggest descriptor, nothing vote-sized.
        assert_eq!(read::<DirectoryCodec>(framed(&ask)).unwrap(), ask);
        assert_eq!(
            read::<DirectoryCodec>(framed(&descriptor)).unwrap(),
            descriptor
        );
        assert!(refused::<DirectoryCodec>(&descriptor_of(
            MAX_PUBLIC_REQUEST_BYTES
        )));
        assert!(refused::<DirectoryCodec>(&vote_sized));

        // Between authorities (a protocol offered to pinned peers alone): votes.
        assert_eq!(read::<PeerCodec>(framed(&vote_sized)).unwrap(), vote_sized);
    }
}
