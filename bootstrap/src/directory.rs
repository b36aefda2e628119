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
use libp2p::{
    StreamProtocol,
    request_response::{self, ProtocolSupport},
};
use p2pmix_proto::v1::{DirectoryRequest, DirectoryResponse};
use prost::Message;

/// The protocol name.
pub const DIRECTORY_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/dir/1.0.0");

/// Largest message either side reads (a signed consensus of ~65 000 nodes, or a vote).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Length-prefixed protobuf codec for one request and one response type, reading at most
/// `MAX` bytes per message. Other request-response protocols of p2pmix (the gateway mailbox)
/// use it with their own types and bound.
pub struct ProtoCodec<Req, Resp, const MAX: usize = MAX_MESSAGE_BYTES> {
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp, const MAX: usize> Default for ProtoCodec<Req, Resp, MAX> {
    fn default() -> Self {
        ProtoCodec {
            _types: PhantomData,
        }
    }
}

impl<Req, Resp, const MAX: usize> Clone for ProtoCodec<Req, Resp, MAX> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp, const MAX: usize> std::fmt::Debug for ProtoCodec<Req, Resp, MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtoCodec")
    }
}

/// Length-prefixed protobuf codec for [`DirectoryRequest`] / [`DirectoryResponse`].
pub type DirectoryCodec = ProtoCodec<DirectoryRequest, DirectoryResponse>;

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

impl<Req, Resp, const MAX: usize> request_response::Codec for ProtoCodec<Req, Resp, MAX>
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
        read_message(io, MAX).await
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

/// A directory behaviour that serves (`serve = true`: authorities and consensus caches) or only
/// asks (light clients), with a request timeout.
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
