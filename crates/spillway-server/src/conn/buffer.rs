//! Request bodies received whole before the request queues for a Python thread, so that a
//! slow client (a 1 byte/s upload, a mobile network) never holds one: the application
//! starts only once its body is here, as behind nginx. Up to `--body-buffer` bytes; the
//! first [`IN_MEMORY`] are kept in memory, the rest in an unnamed temporary file in
//! `$TMPDIR`. A larger body streams under credit as it arrives, after what was buffered.
//!
//! All requests together hold at most [`BUDGET`] bytes: past it, new bodies stream
//! instead, so many concurrent uploads cannot fill the disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

/// Bytes of each body kept in memory.
pub(crate) const IN_MEMORY: usize = 64 * 1024;
/// Bytes of bodies buffered at once, across all requests.
pub(crate) const BUDGET: u64 = 2 << 30;

static HELD: AtomicU64 = AtomicU64::new(0);

/// A body, or its first part, received and held for the worker.
pub(crate) struct Buffered {
    mem: BytesMut,
    file: Option<File>,
    len: u64,
    sent: u64,
    /// Bytes counted against [`BUDGET`], given back on drop.
    reserved: u64,
    /// A piece that came when the budget was spent: sent after the rest, not held.
    spilled: Option<Bytes>,
}

impl Buffered {
    /// An empty buffer.
    pub fn new() -> Buffered {
        Buffered {
            mem: BytesMut::new(),
            file: None,
            len: 0,
            sent: 0,
            reserved: 0,
            spilled: None,
        }
    }

    /// Keeps `data` outside the budget, to be sent last.
    pub fn spill(&mut self, data: Bytes) {
        self.spilled = Some(data);
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Keeps `data`, if the budget allows; false means: stream the rest instead.
    pub fn push(&mut self, data: &[u8]) -> io::Result<bool> {
        let n = data.len() as u64;
        if HELD.fetch_add(n, Ordering::Relaxed) + n > BUDGET {
            HELD.fetch_sub(n, Ordering::Relaxed);
            return Ok(false);
        }
        self.reserved += n;
        let room = IN_MEMORY.saturating_sub(self.mem.len()).min(data.len());
        self.mem.extend_from_slice(&data[..room]);
        let rest = &data[room..];
        if !rest.is_empty() {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(temp_file()?),
            };
            file.write_all(rest)?;
        }
        self.len += n;
        Ok(true)
    }

    /// The next piece for the worker, at most `max` bytes; `None` once all was sent.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if max == 0 {
            return Ok(None);
        }
        if self.sent >= self.len {
            return Ok(self.spilled.as_mut().and_then(|s| {
                let n = s.len().min(max);
                (n > 0).then(|| s.split_to(n))
            }));
        }
        let in_mem = self.mem.len() as u64;
        if self.sent < in_mem {
            let n = ((in_mem - self.sent) as usize).min(max);
            let start = self.sent as usize;
            self.sent += n as u64;
            return Ok(Some(Bytes::copy_from_slice(&self.mem[start..start + n])));
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        let offset = self.sent - in_mem;
        let n = ((self.len - self.sent) as usize).min(max);
        let mut chunk = vec![0u8; n];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut chunk)?;
        self.sent += n as u64;
        Ok(Some(Bytes::from(chunk)))
    }

    /// Everything held was sent.
    pub fn is_drained(&self) -> bool {
        self.sent >= self.len && self.spilled.as_ref().is_none_or(|s| s.is_empty())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        HELD.fetch_sub(self.reserved, Ordering::Relaxed);
    }
}

/// An unnamed file in the temporary directory: nothing to clean up, whatever happens.
fn temp_file() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
    {
        Ok(f) => Ok(f),
        // A file system without O_TMPFILE: a named file, unlinked at once.
        Err(_) => {
            let path = dir.join(format!(
                ".spillway-body-{}-{}",
                std::process::id(),
                HELD.load(Ordering::Relaxed) ^ rand_bits()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

fn rand_bits() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_in_memory_and_large_ones_spill_to_a_file() {
        let mut b = Buffered::new();
        assert!(b.push(b"hello").unwrap());
        assert!(b.file.is_none());
        let big = vec![7u8; IN_MEMORY * 3];
        assert!(b.push(&big).unwrap());
        assert!(b.file.is_some());
        assert_eq!(b.len(), 5 + big.len() as u64);
        let mut out = Vec::new();
        while let Some(c) = b.next_chunk(10_000).unwrap() {
            assert!(c.len() <= 10_000);
            out.extend_from_slice(&c);
        }
        assert!(b.is_drained());
        assert_eq!(&out[..5], b"hello");
        assert_eq!(&out[5..], &big[..]);
    }

    #[test]
    fn the_budget_is_given_back_when_a_buffer_goes() {
        let before = HELD.load(Ordering::Relaxed);
        let mut b = Buffered::new();
        b.push(&[1u8; 1000]).unwrap();
        assert!(HELD.load(Ordering::Relaxed) >= before + 1000);
        drop(b);
        assert!(HELD.load(Ordering::Relaxed) < before + 1000);
    }
}
