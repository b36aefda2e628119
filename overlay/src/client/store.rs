//! The client's state on disk: `DATA_DIR/client.redb`, one redb database (crash-safe: a
//! commit is atomic and durable when it returns, checksummed copy-on-write pages, so a crash
//! leaves the last commit). The driver writes each `StoreBatch` of the core in one
//! transaction and loads a [`SavedState`] back at start.
//!
//! Tables (keys and values are bytes; numbers big-endian; `id` a message id, 16 bytes):
//! - `outbox`: id -> recipient address (text) | reply SURBs (u8) | created (u64 ms) | parts
//! - `outbox_acked`: id | index (u16) -> empty
//! - `ack_keys`: id | label -> index (u16) | issued (u64 ms) | encoded SURB keys
//! - `reply_keys`: label -> answered id | issued (u64 ms) | encoded SURB keys
//! - `fragments`: id | index (u16) -> count (u16) | first seen (u64 ms) | sender | reply-to | data
//! - `partial_surbs`: id -> encoded SURBs
//! - `inbox`: id -> completed (u64 ms) | sender | reply-to | encoded SURBs | bytes
//! - `delivered`: id -> delivered (u64 ms)
//! - `meta`: `version` -> u32, `mailbox_ack` -> u64
//!
//! Entries that do not decode (a foreign version, damage) are counted and skipped, never a
//! panic.

use std::path::Path;

use p2pmix_mix::Label;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::client::{
    address::Address,
    core::{
        SavedAckLabel, SavedFragment, SavedOutbound, SavedReceived, SavedReplyLabel, SavedState,
        StoreOp,
    },
    frame::MessageId,
};

/// File name of the store in a client's data directory.
pub const CLIENT_STORE_FILE: &str = "client.redb";

/// Version of the layout described in the module documentation.
const LAYOUT_VERSION: u32 = 1;

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
/// What `load` runs on each entry of a table (`None`: the entry does not decode).
type EntryFn<'a> = dyn FnMut(&[u8], &[u8]) -> Option<()> + 'a;
const OUTBOX: Table = TableDefinition::new("outbox");
const OUTBOX_ACKED: Table = TableDefinition::new("outbox_acked");
const ACK_KEYS: Table = TableDefinition::new("ack_keys");
const REPLY_KEYS: Table = TableDefinition::new("reply_keys");
const FRAGMENTS: Table = TableDefinition::new("fragments");
const PARTIAL_SURBS: Table = TableDefinition::new("partial_surbs");
const INBOX: Table = TableDefinition::new("inbox");
const DELIVERED: Table = TableDefinition::new("delivered");
const META: Table = TableDefinition::new("meta");
const ALL: [Table; 9] = [
    OUTBOX,
    OUTBOX_ACKED,
    ACK_KEYS,
    REPLY_KEYS,
    FRAGMENTS,
    PARTIAL_SURBS,
    INBOX,
    DELIVERED,
    META,
];

/// Why the store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("client store: {0}")]
    Db(#[from] redb::Error),
    /// The store was written by a newer layout.
    #[error("client store layout {0} is not known to this version")]
    Layout(u32),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// The client store. See the module documentation.
#[derive(Debug)]
pub struct ClientStore {
    db: Database,
}

/// What a load found besides the state: entries that did not decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries skipped.
    pub damaged: usize,
}

impl ClientStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            for t in ALL {
                txn.open_table(t).map_err(db_err)?;
            }
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let version = meta
                .get(&b"version"[..])
                .map_err(db_err)?
                .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                .map(u32::from_be_bytes);
            match version {
                None => {
                    meta.insert(&b"version"[..], &LAYOUT_VERSION.to_be_bytes()[..])
                        .map_err(db_err)?;
                }
                Some(LAYOUT_VERSION) => {}
                Some(other) => return Err(StoreError::Layout(other)),
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(ClientStore { db })
    }

    /// Everything the store holds.
    pub fn load(&self) -> Result<(SavedState, LoadReport), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let mut state = SavedState::default();
        let mut report = LoadReport::default();
        let mut each = |table: Table, f: &mut EntryFn<'_>| {
            let t = txn.open_table(table).map_err(db_err)?;
            for entry in t.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                if f(k.value(), v.value()).is_none() {
                    report.damaged += 1;
                }
            }
            Ok::<(), StoreError>(())
        };
        let mut acked: Vec<(MessageId, u16)> = Vec::new();
        each(OUTBOX, &mut |k, v| {
            state.outbox.push(decode_outbound(id_of(k)?, v)?);
            Some(())
        })?;
        each(OUTBOX_ACKED, &mut |k, _| {
            let mut r = Reader(k);
            acked.push((r.id()?, r.u16()?));
            r.end()
        })?;
        for (message, index) in acked {
            if let Some(o) = state.outbox.iter_mut().find(|o| o.message == message) {
                o.acked.push(index);
            }
        }
        each(ACK_KEYS, &mut |k, v| {
            let mut key = Reader(k);
            let (message, label) = (key.id()?, key.label()?);
            key.end()?;
            let mut r = Reader(v);
            state.ack_labels.push(SavedAckLabel {
                label,
                message,
                index: r.u16()?,
                issued_ms: r.u64()?,
                keys: Zeroizing::new(r.rest().to_vec()),
            });
            Some(())
        })?;
        each(REPLY_KEYS, &mut |k, v| {
            let label = Reader(k).label()?;
            let mut r = Reader(v);
            state.reply_labels.push(SavedReplyLabel {
                label,
                answered: r.id()?,
                issued_ms: r.u64()?,
                keys: Zeroizing::new(r.rest().to_vec()),
            });
            Some(())
        })?;
        each(FRAGMENTS, &mut |k, v| {
            let mut key = Reader(k);
            let (message, index) = (key.id()?, key.u16()?);
            key.end()?;
            state.fragments.push(decode_fragment(message, index, v)?);
            Some(())
        })?;
        each(PARTIAL_SURBS, &mut |k, v| {
            state
                .partial_surbs
                .push((id_of(k)?, decode_surbs(&mut Reader(v))?));
            Some(())
        })?;
        each(INBOX, &mut |k, v| {
            state.inbox.push(decode_received(id_of(k)?, v)?);
            Some(())
        })?;
        each(DELIVERED, &mut |k, v| {
            state.delivered.push((id_of(k)?, Reader(v).u64()?));
            Some(())
        })?;
        let meta = txn.open_table(META).map_err(db_err)?;
        state.mailbox_ack = meta
            .get(&b"mailbox_ack"[..])
            .map_err(db_err)?
            .and_then(|v| Reader(v.value()).u64())
            .unwrap_or(0);
        Ok((state, report))
    }

    /// Writes `ops` in one transaction: all of them are durable when this returns `Ok`, none
    /// of them after an error or a crash.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        for op in ops {
            apply_op(&txn, op)?;
        }
        txn.commit().map_err(db_err)
    }
}

/// The key range of everything under message id `id` in a table keyed `id | ...`.
fn under(id: &MessageId) -> (Vec<u8>, Vec<u8>) {
    let mut lo = id.0.to_vec();
    lo.push(0);
    let mut hi = id.0.to_vec();
    hi.extend_from_slice(&[0xff; 17]);
    (lo, hi)
}

fn remove_under(
    txn: &redb::WriteTransaction,
    table: Table,
    id: &MessageId,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(table).map_err(db_err)?;
    let (lo, hi) = under(id);
    t.retain_in(&lo[..]..=&hi[..], |_, _| false).map_err(db_err)
}

fn apply_op(txn: &redb::WriteTransaction, op: &StoreOp) -> Result<(), StoreError> {
    let put = |table: Table, k: &[u8], v: &[u8]| -> Result<(), StoreError> {
        txn.open_table(table)
            .map_err(db_err)?
            .insert(k, v)
            .map_err(db_err)?;
        Ok(())
    };
    let del = |table: Table, k: &[u8]| -> Result<(), StoreError> {
        txn.open_table(table)
            .map_err(db_err)?
            .remove(k)
            .map_err(db_err)?;
        Ok(())
    };
    match op {
        StoreOp::Outbox(o) => put(OUTBOX, &o.message.0, &encode_outbound(o))?,
        StoreOp::FragmentAcked { message, index } => {
            put(OUTBOX_ACKED, &id_index(message, *index), &[])?
        }
        StoreOp::OutboxDone { message } => {
            del(OUTBOX, &message.0)?;
            remove_under(txn, OUTBOX_ACKED, message)?;
            remove_under(txn, ACK_KEYS, message)?;
        }
        StoreOp::AckKeys(a) => {
            let mut k = a.message.0.to_vec();
            k.extend_from_slice(&a.label.0);
            let mut v = Zeroizing::new(Vec::with_capacity(10 + a.keys.len()));
            v.extend_from_slice(&a.index.to_be_bytes());
            v.extend_from_slice(&a.issued_ms.to_be_bytes());
            v.extend_from_slice(&a.keys);
            put(ACK_KEYS, &k, &v)?;
        }
        StoreOp::ForgetAckKeys { message, label } => {
            let mut k = message.0.to_vec();
            k.extend_from_slice(&label.0);
            del(ACK_KEYS, &k)?;
        }
        StoreOp::ReplyKeys(r) => {
            let mut v = Zeroizing::new(Vec::with_capacity(24 + r.keys.len()));
            v.extend_from_slice(&r.answered.0);
            v.extend_from_slice(&r.issued_ms.to_be_bytes());
            v.extend_from_slice(&r.keys);
            put(REPLY_KEYS, &r.label.0, &v)?;
        }
        StoreOp::ForgetReplyKeys { label } => del(REPLY_KEYS, &label.0)?,
        StoreOp::Fragment(f) => put(
            FRAGMENTS,
            &id_index(&f.message, f.index),
            &encode_fragment(f),
        )?,
        StoreOp::ReplySurbs { message, surbs } => {
            let mut v = Zeroizing::new(Vec::new());
            encode_surbs(&mut v, surbs);
            put(PARTIAL_SURBS, &message.0, &v)?;
        }
        StoreOp::Completed {
            message,
            at_ms,
            keep,
        } => {
            put(DELIVERED, &message.0, &at_ms.to_be_bytes())?;
            if *keep {
                let received = assemble(txn, message, *at_ms)?;
                put(INBOX, &message.0, &encode_received(&received))?;
            }
            remove_under(txn, FRAGMENTS, message)?;
            del(PARTIAL_SURBS, &message.0)?;
        }
        StoreOp::Accepted { message } => del(INBOX, &message.0)?,
        StoreOp::PartialExpired { message } => {
            remove_under(txn, FRAGMENTS, message)?;
            del(PARTIAL_SURBS, &message.0)?;
        }
        StoreOp::ForgetDelivered { message } => del(DELIVERED, &message.0)?,
        StoreOp::MailboxAck { through } => {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let held = meta
                .get(&b"mailbox_ack"[..])
                .map_err(db_err)?
                .and_then(|v| Reader(v.value()).u64())
                .unwrap_or(0);
            meta.insert(&b"mailbox_ack"[..], &held.max(*through).to_be_bytes()[..])
                .map_err(db_err)?;
        }
    }
    Ok(())
}

/// The whole message `message` from its stored fragments (inside the transaction that
/// completes it).
fn assemble(
    txn: &redb::WriteTransaction,
    message: &MessageId,
    at_ms: u64,
) -> Result<SavedReceived, StoreError> {
    let fragments = txn.open_table(FRAGMENTS).map_err(db_err)?;
    let (lo, hi) = under(message);
    let mut received = SavedReceived {
        message: *message,
        bytes: Vec::new(),
        from: None,
        in_reply_to: None,
        surbs: Vec::new(),
        at_ms,
    };
    // Keys sort by index (big-endian), so the data comes in order.
    for entry in fragments.range(&lo[..]..=&hi[..]).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let mut key = Reader(k.value());
        let parsed = key
            .id()
            .and_then(|m| Some((m, key.u16()?)))
            .and_then(|(m, i)| decode_fragment(m, i, v.value()));
        if let Some(f) = parsed {
            received.from = f.from;
            received.in_reply_to = f.in_reply_to;
            received.bytes.extend_from_slice(&f.data);
        }
    }
    let surbs = txn.open_table(PARTIAL_SURBS).map_err(db_err)?;
    if let Some(v) = surbs.get(&message.0[..]).map_err(db_err)? {
        received.surbs = decode_surbs(&mut Reader(v.value())).unwrap_or_default();
    }
    Ok(received)
}

fn id_index(id: &MessageId, index: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&id.0);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

fn id_of(k: &[u8]) -> Option<MessageId> {
    let mut r = Reader(k);
    let id = r.id()?;
    r.end()?;
    Some(id)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn id(&mut self) -> Option<MessageId> {
        self.take(16)?.try_into().ok().map(MessageId)
    }
    fn label(&mut self) -> Option<Label> {
        self.take(16)?.try_into().ok().map(Label)
    }
    fn key32(&mut self) -> Option<Option<[u8; 32]>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.take(32)?.try_into().ok().map(Some),
            _ => None,
        }
    }
    fn opt_id(&mut self) -> Option<Option<MessageId>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.id().map(Some),
            _ => None,
        }
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn put_key32(out: &mut Vec<u8>, k: &Option<[u8; 32]>) {
    match k {
        Some(k) => {
            out.push(1);
            out.extend_from_slice(k);
        }
        None => out.push(0),
    }
}

fn put_opt_id(out: &mut Vec<u8>, id: &Option<MessageId>) {
    match id {
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.0);
        }
        None => out.push(0),
    }
}

fn encode_outbound(o: &SavedOutbound) -> Vec<u8> {
    let to = o.to.to_string();
    let mut v =
        Vec::with_capacity(16 + to.len() + o.parts.iter().map(|p| p.len() + 4).sum::<usize>());
    v.extend_from_slice(&(to.len() as u16).to_be_bytes());
    v.extend_from_slice(to.as_bytes());
    v.push(o.reply_surbs.min(255) as u8);
    v.extend_from_slice(&o.created_ms.to_be_bytes());
    v.extend_from_slice(&(o.parts.len() as u32).to_be_bytes());
    for p in &o.parts {
        v.extend_from_slice(&(p.len() as u32).to_be_bytes());
        v.extend_from_slice(p);
    }
    v
}

fn decode_outbound(message: MessageId, v: &[u8]) -> Option<SavedOutbound> {
    let mut r = Reader(v);
    let len = r.u16()? as usize;
    let to: Address = std::str::from_utf8(r.take(len)?).ok()?.parse().ok()?;
    let reply_surbs = r.u8()? as usize;
    let created_ms = r.u64()?;
    let n = r.u32()? as usize;
    let mut parts = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len = r.u32()? as usize;
        parts.push(r.take(len)?.to_vec());
    }
    r.end()?;
    Some(SavedOutbound {
        message,
        to,
        parts,
        reply_surbs,
        created_ms,
        acked: Vec::new(),
    })
}

fn encode_fragment(f: &SavedFragment) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + f.data.len());
    v.extend_from_slice(&f.count.to_be_bytes());
    v.extend_from_slice(&f.first_seen_ms.to_be_bytes());
    put_key32(&mut v, &f.from);
    put_opt_id(&mut v, &f.in_reply_to);
    v.extend_from_slice(&f.data);
    v
}

fn decode_fragment(message: MessageId, index: u16, v: &[u8]) -> Option<SavedFragment> {
    let mut r = Reader(v);
    Some(SavedFragment {
        message,
        index,
        count: r.u16()?,
        first_seen_ms: r.u64()?,
        from: r.key32()?,
        in_reply_to: r.opt_id()?,
        data: r.rest().to_vec(),
    })
}

fn encode_surbs(out: &mut Vec<u8>, surbs: &[Zeroizing<Vec<u8>>]) {
    out.push(surbs.len().min(255) as u8);
    for s in surbs.iter().take(255) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
}

fn decode_surbs(r: &mut Reader<'_>) -> Option<Vec<Zeroizing<Vec<u8>>>> {
    let n = r.u8()? as usize;
    let mut surbs = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u16()? as usize;
        surbs.push(Zeroizing::new(r.take(len)?.to_vec()));
    }
    Some(surbs)
}

fn encode_received(m: &SavedReceived) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(64 + m.bytes.len()));
    v.extend_from_slice(&m.at_ms.to_be_bytes());
    put_key32(&mut v, &m.from);
    put_opt_id(&mut v, &m.in_reply_to);
    encode_surbs(&mut v, &m.surbs);
    v.extend_from_slice(&m.bytes);
    v
}

fn decode_received(message: MessageId, v: &[u8]) -> Option<SavedReceived> {
    let mut r = Reader(v);
    Some(SavedReceived {
        message,
        at_ms: r.u64()?,
        from: r.key32()?,
        in_reply_to: r.opt_id()?,
        surbs: decode_surbs(&mut r)?,
        bytes: r.rest().to_vec(),
    })
}
