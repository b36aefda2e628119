//! A gateway's mailboxes: packets the network delivered for its registered clients, kept until
//! the client fetches and acknowledges them, within a per-client quota and a time-to-live.
//!
//! A client registers by fetching (the libp2p connection authenticates its peer id, from which
//! its client id is derived); packets for clients that never registered are refused, so that
//! nobody fills a gateway's disk for ids nobody will collect. Each packet gets a sequence number
//! that only grows (also across restarts: numbers start above `now_ms << 10`), and a fetch
//! acknowledges everything up to the number the client has processed; what is not acknowledged
//! is handed over again. When a directory is given, every stored packet is written to
//! `DIR/<client id hex>/<seq>.pkt` before it counts as stored and removed once acknowledged or
//! expired, so a gateway restart loses nothing it accepted.
//!
//! Time is passed in (milliseconds since the UNIX epoch: expiry survives restarts).

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::{
    StreamProtocol,
    request_response::{self, ProtocolSupport},
};
use p2pmix_bootstrap::ProtoCodec;
use p2pmix_mix::{ClientId, Label};
use p2pmix_proto::v1::{MailboxRequest, MailboxResponse, RefusalCode};
use thiserror::Error;

/// The protocol name.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/mailbox/1.0.0");

/// Largest mailbox message either side reads: a batch of [`MAX_BATCH`] packets fits easily.
pub const MAX_MAILBOX_MESSAGE: usize = 1 << 20;

/// Most packets in one answer.
pub const MAX_BATCH: usize = 256;

/// Longest a gateway holds a fetch open when nothing is waiting.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Length-prefixed protobuf codec for the mailbox protocol.
pub type MailboxCodec = ProtoCodec<MailboxRequest, MailboxResponse, MAX_MAILBOX_MESSAGE>;

/// The mailbox protocol on a swarm.
pub type MailboxBehaviour = request_response::Behaviour<MailboxCodec>;

/// A mailbox behaviour that serves fetches (`serve = true`: gateways) or makes them (clients).
/// Requests may be held open for [`MAX_WAIT`], so the timeout is longer than that.
pub fn mailbox_behaviour(serve: bool) -> MailboxBehaviour {
    let support = if serve {
        ProtocolSupport::Inbound
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        MailboxCodec::default(),
        [(MAILBOX_PROTOCOL, support)],
        request_response::Config::default()
            .with_request_timeout(MAX_WAIT + Duration::from_secs(20)),
    )
}

/// Limits of a gateway's mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Packets held for one client (a 1 MiB message is about 600 packets).
    pub quota: usize,
    /// How long a packet waits for its client.
    pub ttl: Duration,
    /// Bytes held for all clients together (in memory and on disk).
    pub max_bytes: usize,
    /// Registered clients at most.
    pub max_clients: usize,
    /// A registration with an empty mailbox and no fetch for this long is forgotten.
    pub idle_registration: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            quota: 8_192,
            ttl: Duration::from_secs(24 * 3600),
            max_bytes: 512 << 20,
            max_clients: 100_000,
            idle_registration: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why a packet was not stored, or a client not registered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The client never fetched from this gateway.
    #[error("client is not registered here")]
    NotRegistered,
    /// The client's mailbox holds its quota.
    #[error("the client's mailbox is full")]
    QuotaFull,
    /// The gateway holds its byte limit or its number of clients.
    #[error("the gateway's mailboxes are full")]
    Full,
    /// The packet could not be written.
    #[error("mailbox storage: {0}")]
    Io(#[from] io::Error),
}

impl MailboxError {
    /// The code a refusal carries on the wire.
    pub fn code(&self) -> RefusalCode {
        match self {
            MailboxError::NotRegistered => RefusalCode::NotRegistered,
            MailboxError::QuotaFull | MailboxError::Full => RefusalCode::Full,
            MailboxError::Io(_) => RefusalCode::Unspecified,
        }
    }

    /// A short name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            MailboxError::NotRegistered => "not_registered",
            MailboxError::QuotaFull => "quota",
            MailboxError::Full => "full",
            MailboxError::Io(_) => "io",
        }
    }
}

/// One stored packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPacket {
    /// Its sequence number in the client's mailbox.
    pub seq: u64,
    /// The label the packet's creator chose.
    pub label: Label,
    /// The Sphinx body.
    pub body: Vec<u8>,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Mailbox {
    packets: BTreeMap<u64, StoredPacket>,
    next_seq: u64,
    bytes: usize,
    /// The highest number handed to the client since this gateway started: acknowledgements
    /// beyond it (from before a restart) delete nothing the client has not seen.
    handed_through: u64,
    last_seen_ms: u64,
}

/// All mailboxes of a gateway. See the module documentation.
#[derive(Debug)]
pub struct MailboxStore {
    dir: Option<PathBuf>,
    config: MailboxConfig,
    boxes: HashMap<ClientId, Mailbox>,
    bytes: usize,
    seq_floor: u64,
}

/// Bytes of a stored packet's file before the body: expiry (8) and label (16).
const FILE_HEADER: usize = 24;

fn client_hex(client: &ClientId) -> String {
    hex::encode(client.0)
}

impl MailboxStore {
    /// Opens the mailboxes kept in `dir` (created if missing; `None`: in memory only), dropping
    /// expired and damaged packets. Returns the store and the number of packets it holds.
    pub fn open(
        dir: Option<PathBuf>,
        config: MailboxConfig,
        now_ms: u64,
    ) -> io::Result<(Self, usize)> {
        let mut store = MailboxStore {
            dir,
            config,
            boxes: HashMap::new(),
            bytes: 0,
            seq_floor: now_ms << 10,
        };
        let Some(dir) = store.dir.clone() else {
            return Ok((store, 0));
        };
        fs::create_dir_all(&dir)?;
        let mut loaded = 0;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(client) = entry
                .file_name()
                .to_str()
                .and_then(|n| hex::decode(n).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(ClientId)
            else {
                continue;
            };
            let mut mailbox = Mailbox {
                next_seq: store.seq_floor,
                last_seen_ms: now_ms,
                ..Mailbox::default()
            };
            for file in fs::read_dir(entry.path())? {
                let path = file?.path();
                match load_packet(&path) {
                    Some(p) if p.expires_ms > now_ms => {
                        mailbox.next_seq = mailbox.next_seq.max(p.seq + 1);
                        mailbox.bytes += p.body.len();
                        mailbox.packets.insert(p.seq, p);
                    }
                    // Expired, damaged, or a write cut short by a crash.
                    _ => {
                        if let Err(e) = fs::remove_file(&path) {
                            tracing::warn!(path = %path.display(), %e, "could not remove");
                        }
                    }
                }
            }
            loaded += mailbox.packets.len();
            store.bytes += mailbox.bytes;
            store.boxes.insert(client, mailbox);
        }
        Ok((store, loaded))
    }

    fn client_dir(&self, client: &ClientId) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(client_hex(client)))
    }

    /// Registers `client` (idempotent; it also marks the client as seen at `now_ms`);
    /// `Ok(true)` when it is new.
    pub fn register(&mut self, client: ClientId, now_ms: u64) -> Result<bool, MailboxError> {
        if let Some(mailbox) = self.boxes.get_mut(&client) {
            mailbox.last_seen_ms = now_ms;
            return Ok(false);
        }
        if self.boxes.len() >= self.config.max_clients {
            return Err(MailboxError::Full);
        }
        if let Some(dir) = self.client_dir(&client) {
            fs::create_dir_all(dir)?;
        }
        self.boxes.insert(
            client,
            Mailbox {
                next_seq: self.seq_floor,
                last_seen_ms: now_ms,
                ..Mailbox::default()
            },
        );
        Ok(true)
    }

    /// Whether `client` registered here.
    pub fn is_registered(&self, client: &ClientId) -> bool {
        self.boxes.contains_key(client)
    }

    /// Registered clients.
    pub fn clients(&self) -> usize {
        self.boxes.len()
    }

    /// Packets held for all clients.
    pub fn len(&self) -> usize {
        self.boxes.values().map(|m| m.packets.len()).sum()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.boxes.values().all(|m| m.packets.is_empty())
    }

    /// Bytes held for all clients.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held for `client`.
    pub fn pending(&self, client: &ClientId) -> usize {
        self.boxes.get(client).map_or(0, |m| m.packets.len())
    }

    /// Stores a packet for `client`; returns its sequence number.
    pub fn store(
        &mut self,
        client: &ClientId,
        label: Label,
        body: &[u8],
        now_ms: u64,
    ) -> Result<u64, MailboxError> {
        let path = self.client_dir(client);
        let over_bytes = self.bytes + body.len() > self.config.max_bytes;
        let mailbox = self
            .boxes
            .get_mut(client)
            .ok_or(MailboxError::NotRegistered)?;
        if mailbox.packets.len() >= self.config.quota {
            return Err(MailboxError::QuotaFull);
        }
        if over_bytes {
            return Err(MailboxError::Full);
        }
        let seq = mailbox.next_seq;
        let packet = StoredPacket {
            seq,
            label,
            body: body.to_vec(),
            expires_ms: now_ms.saturating_add(self.config.ttl.as_millis() as u64),
        };
        if let Some(dir) = path {
            save_packet(&dir, &packet)?;
        }
        mailbox.next_seq += 1;
        mailbox.bytes += body.len();
        mailbox.packets.insert(seq, packet);
        self.bytes += body.len();
        Ok(seq)
    }

    /// Deletes `client`'s packets up to `ack_through` (at most up to the highest number
    /// handed to it since this gateway started) and returns up to `max` of the rest, oldest
    /// first, with the number left after them.
    ///
    /// After a restart an acknowledgement from before it deletes nothing: everything still
    /// held is handed over again (the client drops what it already has by message id), so
    /// that even a clock stepped back, which could number new packets below the old
    /// acknowledgement, loses nothing.
    pub fn fetch(
        &mut self,
        client: &ClientId,
        ack_through: u64,
        max: usize,
    ) -> (Vec<StoredPacket>, usize) {
        let dir = self.client_dir(client);
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return (Vec::new(), 0);
        };
        let ack_through = ack_through.min(mailbox.handed_through);
        let keep = mailbox.packets.split_off(&ack_through.saturating_add(1));
        let acked = std::mem::replace(&mut mailbox.packets, keep);
        for packet in acked.values() {
            mailbox.bytes -= packet.body.len();
            self.bytes -= packet.body.len();
            remove_packet(dir.as_deref(), packet.seq);
        }
        let out: Vec<StoredPacket> = mailbox.packets.values().take(max).cloned().collect();
        if let Some(last) = out.last() {
            mailbox.handed_through = mailbox.handed_through.max(last.seq);
        }
        let left = mailbox.packets.len() - out.len();
        (out, left)
    }

    /// Drops packets whose time-to-live is over, and registrations with nothing held that were
    /// not seen for [`MailboxConfig::idle_registration`]; returns how many packets.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let idle = self.config.idle_registration.as_millis() as u64;
        let dir = self.dir.clone();
        self.boxes.retain(|client, mailbox| {
            let keep =
                !mailbox.packets.is_empty() || now_ms.saturating_sub(mailbox.last_seen_ms) < idle;
            if !keep && let Some(d) = &dir {
                let _ = fs::remove_dir_all(d.join(client_hex(client)));
            }
            keep
        });
        let mut dropped = 0;
        for (client, mailbox) in &mut self.boxes {
            let dir = self.dir.as_ref().map(|d| d.join(client_hex(client)));
            mailbox.packets.retain(|seq, p| {
                let keep = p.expires_ms > now_ms;
                if !keep {
                    dropped += 1;
                    mailbox.bytes -= p.body.len();
                    self.bytes -= p.body.len();
                    remove_packet(dir.as_deref(), *seq);
                }
                keep
            });
        }
        dropped
    }
}

fn packet_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.pkt"))
}

fn save_packet(dir: &Path, packet: &StoredPacket) -> io::Result<()> {
    let path = packet_path(dir, packet.seq);
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&packet.expires_ms.to_be_bytes())?;
    file.write_all(&packet.label.0)?;
    file.write_all(&packet.body)?;
    file.sync_data()?;
    fs::rename(&tmp, &path)
}

fn load_packet(path: &Path) -> Option<StoredPacket> {
    if path.extension()? != "pkt" {
        return None;
    }
    let seq = path.file_stem()?.to_str()?.parse().ok()?;
    let bytes = fs::read(path).ok()?;
    let expires_ms = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let label = Label(bytes.get(8..FILE_HEADER)?.try_into().ok()?);
    Some(StoredPacket {
        seq,
        label,
        body: bytes.get(FILE_HEADER..)?.to_vec(),
        expires_ms,
    })
}

fn remove_packet(dir: Option<&Path>, seq: u64) {
    if let Some(dir) = dir {
        let path = packet_path(dir, seq);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %e, "could not remove a delivered packet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("p2pmix-mailbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn client(n: u8) -> ClientId {
        ClientId([n; 32])
    }

    #[test]
    fn unregistered_clients_get_nothing_stored() {
        let (mut store, _) = MailboxStore::open(None, MailboxConfig::default(), T0).unwrap();
        assert!(matches!(
            store.store(&client(1), Label([0; 16]), b"x", T0),
            Err(MailboxError::NotRegistered)
        ));
        assert!(store.register(client(1), T0).unwrap());
        assert!(!store.register(client(1), T0).unwrap());
        store.store(&client(1), Label([0; 16]), b"x", T0).unwrap();
        assert_eq!(store.pending(&client(1)), 1);
    }

    #[test]
    fn fetch_hands_over_until_acknowledged_in_order() {
        let (mut store, _) = MailboxStore::open(None, MailboxConfig::default(), T0).unwrap();
        store.register(client(1), T0).unwrap();
        let seqs: Vec<u64> = (0..5u8)
            .map(|i| store.store(&client(1), Label([i; 16]), &[i], T0).unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        let (first, left) = store.fetch(&client(1), 0, 3);
        assert_eq!(
            first.iter().map(|p| p.body[0]).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(left, 2);
        // Not acknowledged: handed over again.
        let (again, _) = store.fetch(&client(1), 0, 3);
        assert_eq!(again, first);
        let (rest, left) = store.fetch(&client(1), first[2].seq, 10);
        assert_eq!(rest.iter().map(|p| p.body[0]).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(left, 0);
        store.fetch(&client(1), rest[1].seq, 10);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn quota_byte_limit_and_client_limit_hold() {
        let config = MailboxConfig {
            quota: 2,
            max_bytes: 5,
            max_clients: 2,
            ..MailboxConfig::default()
        };
        let (mut store, _) = MailboxStore::open(None, config, T0).unwrap();
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        assert!(matches!(
            store.register(client(3), T0),
            Err(MailboxError::Full)
        ));
        store.store(&client(1), Label([0; 16]), b"ab", T0).unwrap();
        store.store(&client(1), Label([0; 16]), b"cd", T0).unwrap();
        assert!(matches!(
            store.store(&client(1), Label([0; 16]), b"e", T0),
            Err(MailboxError::QuotaFull)
        ));
        assert!(matches!(
            store.store(&client(2), Label([0; 16]), b"efg", T0),
            Err(MailboxError::Full)
        ));
        store.store(&client(2), Label([0; 16]), b"e", T0).unwrap();
    }

    #[test]
    fn packets_expire() {
        let config = MailboxConfig {
            ttl: Duration::from_secs(10),
            ..MailboxConfig::default()
        };
        let (mut store, _) = MailboxStore::open(None, config, T0).unwrap();
        store.register(client(1), T0).unwrap();
        store.store(&client(1), Label([0; 16]), b"old", T0).unwrap();
        store
            .store(&client(1), Label([0; 16]), b"new", T0 + 5_000)
            .unwrap();
        assert_eq!(store.expire(T0 + 10_000), 1);
        let (left, _) = store.fetch(&client(1), 0, 10);
        assert_eq!(left[0].body, b"new");
        assert_eq!(store.bytes(), 3);
    }

    #[test]
    fn a_restart_keeps_registrations_packets_and_growing_numbers() {
        let dir = scratch("restart");
        let (mut store, _) =
            MailboxStore::open(Some(dir.clone()), MailboxConfig::default(), T0).unwrap();
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        let a = store.store(&client(1), Label([1; 16]), b"one", T0).unwrap();
        let b = store.store(&client(1), Label([2; 16]), b"two", T0).unwrap();
        store.fetch(&client(1), 0, 10); // both handed over
        store.fetch(&client(1), a, 10); // the first one processed
        drop(store);
        // A write cut short by a crash, and a damaged file.
        let client_dir = dir.join(client_hex(&client(1)));
        fs::write(client_dir.join("00000000000000000099.tmp"), b"half").unwrap();
        fs::write(client_dir.join("00000000000000000098.pkt"), b"short").unwrap();

        let (mut store, loaded) =
            MailboxStore::open(Some(dir.clone()), MailboxConfig::default(), T0 + 1).unwrap();
        assert_eq!(loaded, 1);
        assert!(store.is_registered(&client(2)));
        let (held, _) = store.fetch(&client(1), a, 10);
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].seq, held[0].label, &held[0].body[..]),
            (b, Label([2; 16]), &b"two"[..])
        );
        // Numbers keep growing: an acknowledgement from before the restart deletes nothing new.
        let c = store
            .store(&client(1), Label([3; 16]), b"three", T0 + 1)
            .unwrap();
        assert!(c > b);
        let (held, _) = store.fetch(&client(1), b, 10);
        assert_eq!(held.len(), 1);
        assert_eq!(fs::read_dir(&client_dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn idle_empty_registrations_are_forgotten() {
        let dir = scratch("idle");
        let config = MailboxConfig {
            idle_registration: Duration::from_secs(100),
            ..MailboxConfig::default()
        };
        let (mut store, _) = MailboxStore::open(Some(dir.clone()), config, T0).unwrap();
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        store.store(&client(2), Label([1; 16]), b"x", T0).unwrap();
        store.register(client(3), T0).unwrap();
        store.register(client(3), T0 + 60_000).unwrap(); // seen again
        store.expire(T0 + 100_000);
        assert!(!store.is_registered(&client(1)));
        assert!(store.is_registered(&client(2)), "it still holds a packet");
        assert!(store.is_registered(&client(3)));
        assert!(!dir.join(client_hex(&client(1))).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_packets_are_not_loaded() {
        let dir = scratch("expired");
        let config = MailboxConfig {
            ttl: Duration::from_secs(1),
            ..MailboxConfig::default()
        };
        let (mut store, _) = MailboxStore::open(Some(dir.clone()), config, T0).unwrap();
        store.register(client(1), T0).unwrap();
        store.store(&client(1), Label([1; 16]), b"x", T0).unwrap();
        drop(store);
        let (store, loaded) = MailboxStore::open(Some(dir.clone()), config, T0 + 2_000).unwrap();
        assert_eq!((loaded, store.len()), (0, 0));
        let _ = fs::remove_dir_all(&dir);
    }
}
