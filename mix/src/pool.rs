//! Recycled packet buffers, so that relaying a packet allocates nothing: a connection reads each
//! frame into a buffer taken from the pool, the buffer travels through the Sphinx workers and the
//! delay queue (packets are rewritten in place), and the next hop's connection gives it back once
//! written.

use std::sync::Mutex;

/// A bounded free list of packet-sized buffers, shared by a behaviour and its connections.
#[derive(Debug)]
pub struct PacketPool {
    size: usize,
    max_free: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl PacketPool {
    /// A pool of `size`-byte buffers that keeps at most `max_free` unused ones.
    pub fn new(size: usize, max_free: usize) -> Self {
        PacketPool {
            size,
            max_free,
            free: Mutex::new(Vec::with_capacity(max_free)),
        }
    }

    /// A buffer of exactly `size` bytes (contents unspecified: callers overwrite all of it).
    pub fn take(&self) -> Vec<u8> {
        let recycled = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match recycled {
            Some(mut buf) => {
                buf.resize(self.size, 0);
                buf
            }
            None => vec![0; self.size],
        }
    }

    /// Returns a buffer for reuse (dropped if it is too small or the pool is full).
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < self.size {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max_free {
            free.push(buf);
        }
    }

    /// Unused buffers held.
    pub fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_bound() {
        let pool = PacketPool::new(64, 2);
        let a = pool.take();
        assert_eq!(a.len(), 64);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        pool.give(b);
        pool.give(vec![0; 64]);
        pool.give(vec![0; 64]);
        assert_eq!(pool.free(), 2, "bounded");
        pool.give(vec![0; 8]);
        assert_eq!(pool.free(), 2, "too small to reuse");
        let mut short = pool.take();
        short.truncate(3);
        pool.give(short);
        assert_eq!(pool.take().len(), 64, "resized back to the packet size");
    }
}
