//! The mailboxes on disk: `DATA_DIR/mailbox.redb`, one redb database (crash-safe: a commit is
//! atomic and durable when it returns; a crash leaves the last commit), written in batches by
//! a thread of its own ([`SpoolWriter`]) so that the node's event loop never waits for the
//! disk. The node hands the store's [`SpoolOp`]s to the writer in order; the writer drains
//! what is waiting, applies it in one transaction, and reports which saves are durable (and
//! only then are those packets handed to their clients, see [`super::MailboxStore::spooled`]).
//! At start everything is loaded back ([`DiskSpool::load`]).
//!
//! Tables: `registrations`: client id (32) -> origin (0, or 4 / 6 and 16 bytes of address) |
//! last seen (u64 ms); `packets`: client id (32) | seq (u64 BE) -> expiry (u64 ms) | label (16)
//! | body. Entries that do not decode are skipped and counted.

use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    thread::JoinHandle,
    time::Duration,
};

use p2pmix_mix::{ClientId, Label};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use tokio::sync::mpsc;

use super::store::{Registration, SpoolOp, StoredPacket};

/// File name of the mailbox database in a gateway's data directory.
pub const MAILBOX_DB_FILE: &str = "mailbox.redb";

/// Most changes applied in one transaction.
pub const MAX_BATCH_OPS: usize = 8192;
/// Changes waiting for the writer at most; a packet beyond that is refused (its sender
/// retransmits), other changes wait for room.
pub const MAX_PENDING_OPS: usize = 1 << 16;

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
const REGISTRATIONS: Table = TableDefinition::new("registrations");
const PACKETS: Table = TableDefinition::new("packets");

/// What a gateway's disk held at start: every registered client, its registration and its
/// packets (expired ones included: the store drops them).
pub type SpoolContents = Vec<(ClientId, Registration, Vec<StoredPacket>)>;

/// Why the disk failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The database could not be opened, read or written.
    #[error("mailbox database: {0}")]
    Db(#[from] redb::Error),
}

fn db_err(e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Db(e.into())
}

/// The mailbox database. See the module documentation.
#[derive(Debug)]
pub struct DiskSpool {
    db: Database,
}

impl DiskSpool {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(REGISTRATIONS).map_err(db_err)?;
        txn.open_table(PACKETS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(DiskSpool { db })
    }

    /// Everything on disk, and how many entries did not decode (skipped).
    pub fn load(&self) -> Result<(SpoolContents, usize), SpoolError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let registrations = txn.open_table(REGISTRATIONS).map_err(db_err)?;
        let packets = txn.open_table(PACKETS).map_err(db_err)?;
        let mut damaged = 0;
        let mut contents: Vec<(ClientId, Registration, Vec<StoredPacket>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for entry in registrations.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            match (client_of(k.value()), decode_registration(v.value())) {
                (Some(client), Some(registration)) => {
                    index.insert(client, contents.len());
                    contents.push((client, registration, Vec::new()));
                }
                _ => damaged += 1,
            }
        }
        for entry in packets.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let Some((client, seq)) = packet_key_of(k.value()) else {
                damaged += 1;
                continue;
            };
            let Some(packet) = decode_packet(seq, v.value()) else {
                damaged += 1;
                continue;
            };
            let i = *index.entry(client).or_insert_with(|| {
                contents.push((
                    client,
                    Registration {
                        origin: None,
                        seen_ms: packet.expires_ms,
                    },
                    Vec::new(),
                ));
                contents.len() - 1
            });
            contents[i].2.push(packet);
        }
        Ok((contents, damaged))
    }

    /// Applies `ops` in one transaction: all of them are durable when this returns `Ok`, none
    /// after an error or a crash.
    pub fn apply(&mut self, ops: &[SpoolOp]) -> Result<(), SpoolError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut registrations = txn.open_table(REGISTRATIONS).map_err(db_err)?;
            let mut packets = txn.open_table(PACKETS).map_err(db_err)?;
            for op in ops {
                match op {
                    SpoolOp::Register {
                        client,
                        registration,
                    } => {
                        registrations
                            .insert(&client.0[..], &encode_registration(registration)[..])
                            .map_err(db_err)?;
                    }
                    SpoolOp::Seen { client, seen_ms } => {
                        let origin = registrations
                            .get(&client.0[..])
                            .map_err(db_err)?
                            .and_then(|v| decode_registration(v.value()))
                            .and_then(|r| r.origin);
                        let r = Registration {
                            origin,
                            seen_ms: *seen_ms,
                        };
                        registrations
                            .insert(&client.0[..], &encode_registration(&r)[..])
                            .map_err(db_err)?;
                    }
                    SpoolOp::Save { client, packet } => {
                        packets
                            .insert(
                                &packet_key(client, packet.seq)[..],
                                &encode_packet(packet)[..],
                            )
                            .map_err(db_err)?;
                    }
                    SpoolOp::Remove { client, seq } => {
                        packets
                            .remove(&packet_key(client, *seq)[..])
                            .map_err(db_err)?;
                    }
                    SpoolOp::Forget { client } => {
                        registrations.remove(&client.0[..]).map_err(db_err)?;
                        let (lo, hi) = (packet_key(client, 0), packet_key(client, u64::MAX));
                        packets
                            .retain_in(&lo[..]..=&hi[..], |_, _| false)
                            .map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }
}

/// Which saves a batch made durable (`written`), or could not (`!written`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolReport {
    /// The saved packets, by client and sequence number.
    pub saves: Vec<(ClientId, u64)>,
    /// Whether the batch was written.
    pub written: bool,
}

/// The disk on a thread of its own: changes in (bounded), reports out (bounded). Dropping it
/// lets the thread write what is waiting and end.
#[derive(Debug)]
pub struct SpoolWriter {
    ops: Option<SyncSender<SpoolOp>>,
    reports: mpsc::Receiver<SpoolReport>,
    thread: Option<JoinHandle<()>>,
}

/// Why a change was not taken by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Queued.
    Queued,
    /// The queue is full (only saves are refused: the packet counts as not written).
    Full,
    /// The writer stopped.
    Stopped,
}

impl SpoolWriter {
    /// Starts the writer thread around `spool`.
    pub fn start(mut spool: DiskSpool) -> std::io::Result<Self> {
        let (ops, rx) = sync_channel::<SpoolOp>(MAX_PENDING_OPS);
        let (report_tx, reports) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name("mailbox-spool".into())
            .spawn(move || run_writer(&mut spool, &rx, &report_tx))?;
        Ok(SpoolWriter {
            ops: Some(ops),
            reports,
            thread: Some(thread),
        })
    }

    /// Hands one change to the writer, in order. A save is refused when the queue is full;
    /// other changes wait for room.
    pub fn submit(&self, op: SpoolOp) -> Handoff {
        let Some(ops) = &self.ops else {
            return Handoff::Stopped;
        };
        if matches!(op, SpoolOp::Save { .. }) {
            return match ops.try_send(op) {
                Ok(()) => Handoff::Queued,
                Err(TrySendError::Full(_)) => Handoff::Full,
                Err(TrySendError::Disconnected(_)) => Handoff::Stopped,
            };
        }
        match ops.send(op) {
            Ok(()) => Handoff::Queued,
            Err(_) => Handoff::Stopped,
        }
    }

    /// The next report of the writer (for the node's loop).
    pub async fn next_report(&mut self) -> Option<SpoolReport> {
        self.reports.recv().await
    }

    /// A report already waiting, if any.
    pub fn try_report(&mut self) -> Option<SpoolReport> {
        self.reports.try_recv().ok()
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // The thread drains what is queued, then sees the channel closed and ends.
        self.ops = None;
        self.reports.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_writer(spool: &mut DiskSpool, rx: &Receiver<SpoolOp>, reports: &mpsc::Sender<SpoolReport>) {
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let written = match spool.apply(&batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%e, ops = batch.len(), "mailbox database: a batch was not written");
                false
            }
        };
        let saves: Vec<(ClientId, u64)> = batch
            .iter()
            .filter_map(|op| match op {
                SpoolOp::Save { client, packet } => Some((*client, packet.seq)),
                _ => None,
            })
            .collect();
        if !saves.is_empty()
            && reports
                .blocking_send(SpoolReport { saves, written })
                .is_err()
        {
            // The node is gone; what is queued is still written until the channel closes.
            continue;
        }
    }
}

fn client_of(k: &[u8]) -> Option<ClientId> {
    <[u8; 32]>::try_from(k).ok().map(ClientId)
}

fn packet_key(client: &ClientId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&client.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn packet_key_of(k: &[u8]) -> Option<(ClientId, u64)> {
    if k.len() != 40 {
        return None;
    }
    let client = client_of(&k[..32])?;
    let seq = u64::from_be_bytes(k[32..].try_into().ok()?);
    Some((client, seq))
}

fn encode_registration(r: &Registration) -> Vec<u8> {
    let mut v = Vec::with_capacity(25);
    match r.origin {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.to_ipv6_mapped().octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
    v.extend_from_slice(&r.seen_ms.to_be_bytes());
    v
}

fn decode_registration(v: &[u8]) -> Option<Registration> {
    let (&kind, rest) = v.split_first()?;
    let (origin, rest) = match kind {
        0 => (None, rest),
        4 | 6 => {
            let octets: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            let a = Ipv6Addr::from(octets);
            let ip = if kind == 4 {
                IpAddr::V4(a.to_ipv4_mapped()?)
            } else {
                IpAddr::V6(a)
            };
            (Some(ip), rest.get(16..)?)
        }
        _ => return None,
    };
    let seen_ms = u64::from_be_bytes(rest.try_into().ok()?);
    Some(Registration { origin, seen_ms })
}

fn encode_packet(p: &StoredPacket) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + p.body.len());
    v.extend_from_slice(&p.expires_ms.to_be_bytes());
    v.extend_from_slice(&p.label.0);
    v.extend_from_slice(&p.body);
    v
}

fn decode_packet(seq: u64, v: &[u8]) -> Option<StoredPacket> {
    let expires_ms = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let label = Label(v.get(8..24)?.try_into().ok()?);
    Some(StoredPacket {
        seq,
        label,
        body: v.get(24..)?.to_vec(),
        expires_ms,
    })
}

#[cfg(test)]
mod tests;
