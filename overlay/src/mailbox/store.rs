//! A gateway's mailboxes in memory, sans-IO: packets the network delivered for its registered
//! clients, kept until the client fetches and acknowledges them, within a per-client quota, a
//! byte limit and a time-to-live.
//!
//! A client registers by fetching (the libp2p connection authenticates its peer id, from which
//! its client id is derived); packets for clients that never registered are refused, so that
//! nobody fills a gateway's disk for ids nobody will collect. Each packet gets a sequence number
//! that only grows (also across restarts: numbers start above `now_ms << 10`), and a fetch
//! acknowledges everything up to the number the client has processed; what is not acknowledged
//! is handed over again.
//!
//! Persistence is a value: with [`Persistence::Spooled`] every change that must reach the disk
//! leaves as a [`SpoolOp`] ([`MailboxStore::poll_spool`]) for the driver to apply, and a stored
//! packet is handed to its client only once the driver reports it durable
//! ([`MailboxStore::spooled`]): a gateway restart loses nothing it handed over or acknowledged
//! as stored. Time is passed in (milliseconds since the UNIX epoch: expiry survives restarts).

use std::collections::{BTreeMap, HashMap, VecDeque};

use p2pmix_mix::{ClientId, Label};

use super::{MailboxConfig, MailboxError};

/// One stored packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPacket {
    /// Its sequence number in the client's mailbox.
    pub seq: u64,
    /// The label the packet's creator chose.
    pub label: Label,
    /// The Sphinx body.
    pub body: Vec<u8>,
    /// When it expires (milliseconds since the UNIX epoch).
    pub expires_ms: u64,
}

/// A change the disk must see, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolOp {
    /// `client` registered: its (empty) mailbox survives a restart.
    Register {
        /// The client.
        client: ClientId,
    },
    /// Write `packet` durably, then report with [`MailboxStore::spooled`].
    Save {
        /// The client.
        client: ClientId,
        /// The packet.
        packet: StoredPacket,
    },
    /// The packet `seq` was acknowledged or expired.
    Remove {
        /// The client.
        client: ClientId,
        /// The packet.
        seq: u64,
    },
    /// The registration and everything held for it are gone.
    Forget {
        /// The client.
        client: ClientId,
    },
}

/// Whether the store's changes go to a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only: packets count as durable at once and no [`SpoolOp`] is emitted (tests).
    Memory,
    /// Every change leaves as a [`SpoolOp`]; packets wait for [`MailboxStore::spooled`].
    Spooled,
}

#[derive(Debug)]
struct Held {
    packet: StoredPacket,
    /// On disk (or in a memory-only store): may be handed over.
    durable: bool,
}

#[derive(Debug, Default)]
struct Mailbox {
    packets: BTreeMap<u64, Held>,
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
    config: MailboxConfig,
    persistence: Persistence,
    boxes: HashMap<ClientId, Mailbox>,
    bytes: usize,
    seq_floor: u64,
    spool: VecDeque<SpoolOp>,
}

/// A fetch's answer: packets oldest first, and how many more wait behind them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetched {
    /// The packets handed over.
    pub packets: Vec<StoredPacket>,
    /// Packets still held after them.
    pub remaining: usize,
}

impl MailboxStore {
    /// Empty mailboxes at `now_ms`.
    pub fn new(config: MailboxConfig, persistence: Persistence, now_ms: u64) -> Self {
        MailboxStore {
            config,
            persistence,
            boxes: HashMap::new(),
            bytes: 0,
            seq_floor: now_ms << 10,
            spool: VecDeque::new(),
        }
    }

    /// Mailboxes loaded back from the disk at `now_ms` (see [`super::DiskSpool::load`]): every
    /// registration, and the packets not yet expired (expired ones are removed).
    pub fn restore(
        config: MailboxConfig,
        now_ms: u64,
        contents: impl IntoIterator<Item = (ClientId, Vec<StoredPacket>)>,
    ) -> Self {
        let mut store = MailboxStore::new(config, Persistence::Spooled, now_ms);
        for (client, packets) in contents {
            let mut mailbox = Mailbox {
                next_seq: store.seq_floor,
                last_seen_ms: now_ms,
                ..Mailbox::default()
            };
            for packet in packets {
                if packet.expires_ms <= now_ms {
                    store.spool.push_back(SpoolOp::Remove {
                        client,
                        seq: packet.seq,
                    });
                    continue;
                }
                mailbox.next_seq = mailbox.next_seq.max(packet.seq.saturating_add(1));
                mailbox.bytes += packet.body.len();
                mailbox.packets.insert(
                    packet.seq,
                    Held {
                        packet,
                        durable: true,
                    },
                );
            }
            store.bytes += mailbox.bytes;
            store.boxes.insert(client, mailbox);
        }
        store
    }

    fn emit(&mut self, op: SpoolOp) {
        if self.persistence == Persistence::Spooled {
            self.spool.push_back(op);
        }
    }

    /// The next change the disk must see.
    pub fn poll_spool(&mut self) -> Option<SpoolOp> {
        self.spool.pop_front()
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
        self.boxes.insert(
            client,
            Mailbox {
                next_seq: self.seq_floor,
                last_seen_ms: now_ms,
                ..Mailbox::default()
            },
        );
        self.emit(SpoolOp::Register { client });
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

    /// Stores a packet for `client`; returns its sequence number. With
    /// [`Persistence::Spooled`] it is handed over only after [`MailboxStore::spooled`].
    pub fn store(
        &mut self,
        client: &ClientId,
        label: Label,
        body: &[u8],
        now_ms: u64,
    ) -> Result<u64, MailboxError> {
        let over_bytes = self.bytes + body.len() > self.config.max_bytes;
        let ttl_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let durable = self.persistence == Persistence::Memory;
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
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        mailbox.next_seq += 1;
        mailbox.bytes += body.len();
        self.bytes += body.len();
        if !durable {
            self.spool.push_back(SpoolOp::Save {
                client: *client,
                packet: packet.clone(),
            });
        }
        mailbox.packets.insert(seq, Held { packet, durable });
        Ok(seq)
    }

    /// Whether packet `seq` of `client` is durable (may be handed over).
    pub fn is_durable(&self, client: &ClientId, seq: u64) -> bool {
        self.boxes
            .get(client)
            .and_then(|m| m.packets.get(&seq))
            .is_some_and(|h| h.durable)
    }

    /// Reports how a [`SpoolOp::Save`] went: a durable packet may now be handed over (returns
    /// `true`); one that could not be written is dropped as if it never came.
    pub fn spooled(&mut self, client: &ClientId, seq: u64, written: bool) -> bool {
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return false;
        };
        if written {
            return match mailbox.packets.get_mut(&seq) {
                Some(held) => {
                    held.durable = true;
                    true
                }
                None => false,
            };
        }
        if let Some(held) = mailbox.packets.remove(&seq) {
            mailbox.bytes -= held.packet.body.len();
            self.bytes -= held.packet.body.len();
        }
        false
    }

    /// Deletes `client`'s packets up to `ack_through` (at most up to the highest number
    /// handed to it since this gateway started) and returns up to `max` of the rest, oldest
    /// first, with the number left after them. Only durable packets are handed over, and none
    /// after the first that is not durable yet (acknowledgements are cumulative).
    ///
    /// After a restart an acknowledgement from before it deletes nothing: everything still
    /// held is handed over again (the client drops what it already has by message id), so
    /// that even a clock stepped back, which could number new packets below the old
    /// acknowledgement, loses nothing.
    pub fn fetch(&mut self, client: &ClientId, ack_through: u64, max: usize) -> Fetched {
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return Fetched::default();
        };
        let ack_through = ack_through.min(mailbox.handed_through);
        let keep = mailbox.packets.split_off(&ack_through.saturating_add(1));
        let acked = std::mem::replace(&mut mailbox.packets, keep);
        let mut removed = Vec::new();
        for held in acked.values() {
            mailbox.bytes -= held.packet.body.len();
            self.bytes -= held.packet.body.len();
            removed.push(held.packet.seq);
        }
        let packets: Vec<StoredPacket> = mailbox
            .packets
            .values()
            .take_while(|h| h.durable)
            .take(max)
            .map(|h| h.packet.clone())
            .collect();
        if let Some(last) = packets.last() {
            mailbox.handed_through = mailbox.handed_through.max(last.seq);
        }
        let remaining = mailbox.packets.len() - packets.len();
        for seq in removed {
            self.emit(SpoolOp::Remove {
                client: *client,
                seq,
            });
        }
        Fetched { packets, remaining }
    }

    /// Drops packets whose time-to-live is over, and registrations with nothing held that were
    /// not seen for [`MailboxConfig::idle_registration`]; returns how many packets.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let idle = u64::try_from(self.config.idle_registration.as_millis()).unwrap_or(u64::MAX);
        let mut forgotten = Vec::new();
        self.boxes.retain(|client, mailbox| {
            let keep =
                !mailbox.packets.is_empty() || now_ms.saturating_sub(mailbox.last_seen_ms) < idle;
            if !keep {
                forgotten.push(*client);
            }
            keep
        });
        let mut removed = Vec::new();
        for (client, mailbox) in &mut self.boxes {
            mailbox.packets.retain(|seq, held| {
                let keep = held.packet.expires_ms > now_ms;
                if !keep {
                    removed.push((*client, *seq));
                    mailbox.bytes -= held.packet.body.len();
                    self.bytes -= held.packet.body.len();
                }
                keep
            });
        }
        for client in forgotten {
            self.emit(SpoolOp::Forget { client });
        }
        let dropped = removed.len();
        for (client, seq) in removed {
            self.emit(SpoolOp::Remove { client, seq });
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn client(n: u8) -> ClientId {
        ClientId([n; 32])
    }

    fn memory(config: MailboxConfig) -> MailboxStore {
        MailboxStore::new(config, Persistence::Memory, T0)
    }

    fn bodies(f: &Fetched) -> Vec<u8> {
        f.packets.iter().map(|p| p.body[0]).collect()
    }

    #[test]
    fn unregistered_clients_get_nothing_stored() {
        let mut store = memory(MailboxConfig::default());
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
        let mut store = memory(MailboxConfig::default());
        store.register(client(1), T0).unwrap();
        let seqs: Vec<u64> = (0..5u8)
            .map(|i| store.store(&client(1), Label([i; 16]), &[i], T0).unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        let first = store.fetch(&client(1), 0, 3);
        assert_eq!(bodies(&first), [0, 1, 2]);
        assert_eq!(first.remaining, 2);
        // Not acknowledged: handed over again.
        let again = store.fetch(&client(1), 0, 3);
        assert_eq!(again, first);
        let rest = store.fetch(&client(1), first.packets[2].seq, 10);
        assert_eq!(bodies(&rest), [3, 4]);
        assert_eq!(rest.remaining, 0);
        store.fetch(&client(1), rest.packets[1].seq, 10);
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
        let mut store = memory(config);
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
        let mut store = memory(config);
        store.register(client(1), T0).unwrap();
        store.store(&client(1), Label([0; 16]), b"old", T0).unwrap();
        store
            .store(&client(1), Label([0; 16]), b"new", T0 + 5_000)
            .unwrap();
        assert_eq!(store.expire(T0 + 10_000), 1);
        let left = store.fetch(&client(1), 0, 10);
        assert_eq!(left.packets[0].body, b"new");
        assert_eq!(store.bytes(), 3);
    }

    #[test]
    fn idle_empty_registrations_are_forgotten() {
        let config = MailboxConfig {
            idle_registration: Duration::from_secs(100),
            ..MailboxConfig::default()
        };
        let mut store = MailboxStore::new(config, Persistence::Spooled, T0);
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        let seq = store.store(&client(2), Label([1; 16]), b"x", T0).unwrap();
        store.spooled(&client(2), seq, true);
        store.register(client(3), T0).unwrap();
        store.register(client(3), T0 + 60_000).unwrap(); // seen again
        while store.poll_spool().is_some() {}
        store.expire(T0 + 100_000);
        assert!(!store.is_registered(&client(1)));
        assert!(store.is_registered(&client(2)), "it still holds a packet");
        assert!(store.is_registered(&client(3)));
        assert_eq!(
            std::iter::from_fn(|| store.poll_spool()).collect::<Vec<_>>(),
            vec![SpoolOp::Forget { client: client(1) }]
        );
    }

    #[test]
    fn a_spooled_packet_is_handed_over_only_once_durable_and_a_failed_write_is_dropped() {
        let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
        store.register(client(1), T0).unwrap();
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Register { client: client(1) })
        );
        let a = store.store(&client(1), Label([1; 16]), b"a", T0).unwrap();
        let b = store.store(&client(1), Label([2; 16]), b"b", T0).unwrap();
        assert!(
            matches!(store.poll_spool(), Some(SpoolOp::Save { packet, .. }) if packet.seq == a)
        );
        assert!(
            matches!(store.poll_spool(), Some(SpoolOp::Save { packet, .. }) if packet.seq == b)
        );
        assert!(
            store.fetch(&client(1), 0, 10).packets.is_empty(),
            "nothing durable yet"
        );
        // The second is on disk, the first not yet: nothing may be handed over (cumulative acks).
        store.spooled(&client(1), b, true);
        assert!(store.fetch(&client(1), 0, 10).packets.is_empty());
        // The first could not be written: it is gone, the second goes out.
        assert!(!store.spooled(&client(1), a, false));
        let got = store.fetch(&client(1), 0, 10);
        assert_eq!(bodies(&got), [b'b']);
        assert_eq!(store.bytes(), 1);
        store.fetch(&client(1), b, 10);
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Remove {
                client: client(1),
                seq: b
            })
        );
    }

    #[test]
    fn a_restore_keeps_packets_and_numbers_grow_past_them() {
        let config = MailboxConfig {
            ttl: Duration::from_secs(10),
            ..MailboxConfig::default()
        };
        let old = |seq: u64, expires_ms: u64| StoredPacket {
            seq,
            label: Label([seq as u8; 16]),
            body: vec![seq as u8],
            expires_ms,
        };
        let mut store = MailboxStore::restore(
            config,
            T0,
            [
                (client(1), vec![old(7, T0 + 5_000), old(3, T0 - 1)]),
                (client(2), vec![]),
            ],
        );
        assert!(store.is_registered(&client(2)));
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Remove {
                client: client(1),
                seq: 3
            }),
            "the expired packet is removed from disk"
        );
        // An acknowledgement from before the restart deletes nothing.
        let held = store.fetch(&client(1), 7, 10);
        assert_eq!(bodies(&held), [7]);
        let next = store.store(&client(1), Label([0; 16]), b"n", T0).unwrap();
        assert!(next >= T0 << 10, "numbers start above the restart time");
    }
}
