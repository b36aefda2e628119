//! The mailboxes on disk: `DIR/<client id hex>/<seq>.pkt`, one file per stored packet (expiry,
//! label, body), written and fsynced before the packet counts as stored; a client's directory
//! is its registration. The node applies the store's [`SpoolOp`]s here and loads everything
//! back at start.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use p2pmix_mix::{ClientId, Label};

use super::store::{SpoolOp, StoredPacket};

/// What a gateway's disk held at start: every registered client and its packets (expired ones
/// included: the store drops them).
pub type SpoolContents = Vec<(ClientId, Vec<StoredPacket>)>;

/// Bytes of a stored packet's file before the body: expiry (8) and label (16).
const FILE_HEADER: usize = 24;

/// The mailbox directory. See the module documentation.
#[derive(Debug)]
pub struct DiskSpool {
    dir: PathBuf,
}

fn client_hex(client: &ClientId) -> String {
    hex::encode(client.0)
}

impl DiskSpool {
    /// The spool in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(DiskSpool { dir })
    }

    fn client_dir(&self, client: &ClientId) -> PathBuf {
        self.dir.join(client_hex(client))
    }

    /// Everything on disk; damaged files and writes a crash cut short are removed.
    pub fn load(&self) -> io::Result<SpoolContents> {
        let mut contents = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
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
            let mut packets = Vec::new();
            for file in fs::read_dir(entry.path())? {
                let path = file?.path();
                match load_packet(&path) {
                    Some(p) => packets.push(p),
                    // Damaged, or a write cut short by a crash.
                    None => {
                        if let Err(e) = fs::remove_file(&path) {
                            tracing::warn!(path = %path.display(), %e, "could not remove");
                        }
                    }
                }
            }
            contents.push((client, packets));
        }
        Ok(contents)
    }

    /// Applies one change. A failed [`SpoolOp::Save`] must be reported to the store (the packet
    /// is then dropped); other failures only leave a file behind that the next load or expiry
    /// removes.
    pub fn apply(&mut self, op: &SpoolOp) -> io::Result<()> {
        match op {
            SpoolOp::Register { client } => fs::create_dir_all(self.client_dir(client)),
            SpoolOp::Save { client, packet } => {
                let dir = self.client_dir(client);
                fs::create_dir_all(&dir)?;
                save_packet(&dir, packet)
            }
            SpoolOp::Remove { client, seq } => {
                let path = packet_path(&self.client_dir(client), *seq);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
            SpoolOp::Forget { client } => match fs::remove_dir_all(self.client_dir(client)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mailbox::{MailboxConfig, MailboxStore, store::Persistence};

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

    /// Applies every pending change, reporting saves back as the node does.
    fn flush(store: &mut MailboxStore, spool: &mut DiskSpool) {
        while let Some(op) = store.poll_spool() {
            let written = spool.apply(&op).is_ok();
            if let SpoolOp::Save { client, packet } = &op {
                store.spooled(client, packet.seq, written);
            }
        }
    }

    #[test]
    fn a_restart_keeps_registrations_packets_and_growing_numbers() {
        let dir = scratch("restart");
        let mut spool = DiskSpool::open(dir.clone()).unwrap();
        let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        let a = store.store(&client(1), Label([1; 16]), b"one", T0).unwrap();
        let b = store.store(&client(1), Label([2; 16]), b"two", T0).unwrap();
        flush(&mut store, &mut spool);
        store.fetch(&client(1), 0, 10); // both handed over
        store.fetch(&client(1), a, 10); // the first one processed
        flush(&mut store, &mut spool);
        drop(store);
        // A write cut short by a crash, and a damaged file.
        let client_dir = dir.join(client_hex(&client(1)));
        fs::write(client_dir.join("00000000000000000099.tmp"), b"half").unwrap();
        fs::write(client_dir.join("00000000000000000098.pkt"), b"short").unwrap();

        let spool = DiskSpool::open(dir.clone()).unwrap();
        let contents = spool.load().unwrap();
        let mut store = MailboxStore::restore(MailboxConfig::default(), T0 + 1, contents);
        assert_eq!(store.len(), 1);
        assert!(store.is_registered(&client(2)));
        let held = store.fetch(&client(1), a, 10).packets;
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
        let mut spool = spool;
        flush(&mut store, &mut spool);
        let held = store.fetch(&client(1), b, 10).packets;
        assert_eq!(held.len(), 1);
        flush(&mut store, &mut spool);
        assert_eq!(fs::read_dir(&client_dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_packets_and_forgotten_registrations_leave_the_disk() {
        let dir = scratch("expired");
        let config = MailboxConfig {
            ttl: Duration::from_secs(1),
            idle_registration: Duration::from_secs(100),
            ..MailboxConfig::default()
        };
        let mut spool = DiskSpool::open(dir.clone()).unwrap();
        let mut store = MailboxStore::new(config, Persistence::Spooled, T0);
        store.register(client(1), T0).unwrap();
        store.register(client(2), T0).unwrap();
        store.store(&client(1), Label([1; 16]), b"x", T0).unwrap();
        flush(&mut store, &mut spool);
        drop(store);
        let contents = spool.load().unwrap();
        let mut store = MailboxStore::restore(config, T0 + 2_000, contents);
        assert_eq!(store.len(), 0, "expired while the gateway was down");
        store.expire(T0 + 200_000);
        flush(&mut store, &mut spool);
        assert!(!dir.join(client_hex(&client(1))).exists());
        assert!(!dir.join(client_hex(&client(2))).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
