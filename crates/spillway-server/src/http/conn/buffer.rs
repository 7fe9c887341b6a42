//! Request bodies received whole before the request queues for a Python thread, so that a
//! slow client (a 1 byte/s upload, a mobile network) never holds one: the application
//! starts only once its body is here, as behind nginx. Up to `--body-buffer` bytes; the
//! first [`IN_MEMORY`] are kept in memory, the rest in an unnamed temporary file in
//! `$TMPDIR`. A larger body streams under credit as it arrives, after what was buffered.
//!
//! All requests together hold at most [`BUDGET`] bytes, and the temporary files never
//! take the last [`DISK_RESERVE`] of `$TMPDIR`'s file system (its free space is read with
//! statvfs(2) at most once a second): past either, new bodies stream instead, so many
//! concurrent uploads cannot fill the disk. A `$TMPDIR` that cannot take a file (missing,
//! read-only, full, or no descriptor left) makes bodies stream too, with one WARN per
//! period: holding a body is an optimisation, never a reason to refuse a request.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::telemetry::throttle::Throttle;

/// Bytes of each body kept in memory.
pub(crate) const IN_MEMORY: usize = 64 * 1024;
/// Bytes of bodies buffered at once, across all requests.
pub(crate) const BUDGET: u64 = 2 << 30;

/// Part of the temporary directory's file system left free: one part in this many.
pub(crate) const DISK_RESERVE: u64 = 20;
/// After a temporary file could not be written, bodies stream for this long before the
/// directory is tried again (and the WARN is written at most this often).
const RETRY_AFTER: Duration = Duration::from_secs(10);

static HELD: AtomicU64 = AtomicU64::new(0);
static TMP_FAILED: Throttle = Throttle::new(RETRY_AFTER);
static TMP_FULL: Throttle = Throttle::new(RETRY_AFTER);
static DISK: Mutex<Disk> = Mutex::new(Disk {
    checked: None,
    room: 0,
    failed: None,
});

/// What is known of the temporary directory.
struct Disk {
    /// When its free space was last read.
    checked: Option<Instant>,
    /// Bytes the temporary files may still take: free space less the reserve, less what
    /// was written since it was read.
    room: u64,
    /// When a temporary file last failed.
    failed: Option<Instant>,
}

/// Free bytes of `dir`'s file system an unprivileged writer can use, less the reserve.
fn room_in(dir: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in $TMPDIR"))?;
    // SAFETY: all zeroes is a valid statvfs; statvfs(2) takes a NUL-terminated path and
    // writes into the struct we own.
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut st), st)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize;
    let avail = st.f_bavail.saturating_mul(block);
    let reserve = st.f_blocks.saturating_mul(block) / DISK_RESERVE;
    Ok(avail.saturating_sub(reserve))
}

/// Takes `n` bytes of room in the temporary directory; false if it has not that much, or
/// failed lately.
fn take_disk_room(n: u64) -> bool {
    let mut d = DISK.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if d.failed
        .is_some_and(|t| now.duration_since(t) < RETRY_AFTER)
    {
        return false;
    }
    if d.checked
        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
    {
        d.checked = Some(now);
        d.room = match room_in(&std::env::temp_dir()) {
            Ok(room) => room,
            Err(e) => {
                drop(d);
                temp_file_failed(&e);
                return false;
            }
        };
    }
    if d.room < n {
        if let Some(suppressed) = TMP_FULL.allow() {
            tracing::warn!(
                dir = %std::env::temp_dir().display(),
                suppressed,
                "the temporary directory is nearly full: request bodies stream to the application instead of being held"
            );
        }
        return false;
    }
    d.room -= n;
    true
}

/// Says once per period that the temporary directory failed, and stops using it for a
/// while.
fn temp_file_failed(e: &io::Error) {
    DISK.lock().unwrap_or_else(|p| p.into_inner()).failed = Some(Instant::now());
    if let Some(suppressed) = TMP_FAILED.allow() {
        tracing::warn!(
            dir = %std::env::temp_dir().display(),
            error = %e,
            cause = crate::host::fdlimit::hint(e),
            suppressed,
            retry_in_s = RETRY_AFTER.as_secs(),
            "cannot hold request bodies in a temporary file ($TMPDIR): they stream to the application instead"
        );
    }
}

/// File-bound bytes gathered before one write: writes and reads of the temporary file run
/// on the blocking pool, never on the event loop, one per batch (a body held in memory
/// grows by at most this much while it waits for its write).
const WRITE_BATCH: usize = 128 * 1024;
/// The least and the most read back from the file at once, ahead of the worker's credit.
const READ_AHEAD: (u64, u64) = (256 * 1024, 4 << 20);

/// A body, or its first part, received and held for the worker: the first bytes in
/// memory, then the temporary file, then (not yet written) `pending`.
pub(crate) struct Buffered {
    mem: BytesMut,
    file: Option<Arc<File>>,
    /// Bytes written to the file.
    file_len: u64,
    /// The bytes after the file's, gathered for its next write.
    pending: BytesMut,
    len: u64,
    sent: u64,
    /// Bytes read back from the file at body offset `ahead_at`, not yet sent.
    ahead: Bytes,
    ahead_at: u64,
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
            file_len: 0,
            pending: BytesMut::new(),
            len: 0,
            sent: 0,
            ahead: Bytes::new(),
            ahead_at: 0,
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

    /// Keeps `data`, if the budget and the temporary directory allow; false means: stream
    /// the rest instead (nothing of `data` was kept).
    pub async fn push(&mut self, data: &[u8]) -> bool {
        let n = data.len() as u64;
        if HELD.fetch_add(n, Ordering::Relaxed) + n > BUDGET {
            HELD.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        let room = IN_MEMORY.saturating_sub(self.mem.len()).min(data.len());
        let rest = &data[room..];
        // The file part first: if it fails, nothing of `data` is kept.
        if !rest.is_empty() {
            if let Err(e) = self.make_room(rest.len()).await {
                HELD.fetch_sub(n, Ordering::Relaxed);
                if let Some(e) = e {
                    temp_file_failed(&e);
                }
                return false;
            }
            self.pending.extend_from_slice(rest);
        }
        self.reserved += n;
        self.mem.extend_from_slice(&data[..room]);
        self.len += n;
        true
    }

    /// Makes room in `pending` for `n` more bytes, writing it to the file once a batch
    /// is full. `Err(None)`: no room on the disk.
    async fn make_room(&mut self, n: usize) -> Result<(), Option<io::Error>> {
        if !take_disk_room(n as u64) {
            return Err(None);
        }
        if self.pending.len() + n <= WRITE_BATCH {
            return Ok(());
        }
        let file = self.file.clone();
        let batch = self.pending.split().freeze();
        let kept = batch.clone();
        let at = self.file_len;
        let written = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => Arc::new(temp_file()?),
            };
            file.write_all_at(&batch, at)?;
            Ok::<_, io::Error>(file)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match written {
            Ok(file) => {
                self.file = Some(file);
                self.file_len += kept.len() as u64;
                Ok(())
            }
            Err(e) => {
                // What was kept stays servable: the batch goes back where it was.
                self.pending = BytesMut::from(kept.as_ref());
                Err(Some(e))
            }
        }
    }

    /// Reads the file ahead of the worker's `credit` off the event loop, so that
    /// [`Buffered::next_chunk`] finds the bytes in memory.
    pub async fn fill(&mut self, credit: u64) {
        let in_mem = self.mem.len() as u64;
        let file_end = in_mem + self.file_len;
        let ahead_end = self.ahead_at + self.ahead.len() as u64;
        if self.sent < in_mem || self.sent >= file_end || self.sent < ahead_end {
            return;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        let at = self.sent;
        let n = (file_end - at).min(credit.clamp(READ_AHEAD.0, READ_AHEAD.1)) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, at - in_mem).map(|()| buf)
        })
        .await;
        // A failed read is tried again, on the spot, by next_chunk, which reports it.
        if let Ok(Ok(buf)) = read {
            self.ahead = Bytes::from(buf);
            self.ahead_at = at;
        }
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
        let file_end = in_mem + self.file_len;
        let chunk = if self.sent < in_mem {
            let start = self.sent as usize;
            let n = (in_mem as usize - start).min(max);
            Bytes::copy_from_slice(&self.mem[start..start + n])
        } else if self.sent >= file_end {
            let start = (self.sent - file_end) as usize;
            let n = (self.pending.len() - start).min(max);
            Bytes::copy_from_slice(&self.pending[start..start + n])
        } else if self.sent >= self.ahead_at && self.sent < self.ahead_at + self.ahead.len() as u64
        {
            let start = (self.sent - self.ahead_at) as usize;
            let n = (self.ahead.len() - start).min(max);
            self.ahead.slice(start..start + n)
        } else {
            // Not read ahead (fill was not awaited): read here.
            let Some(file) = self.file.as_ref() else {
                return Ok(None);
            };
            let n = ((file_end - self.sent) as usize).min(max);
            let mut chunk = vec![0u8; n];
            file.read_exact_at(&mut chunk, self.sent - in_mem)?;
            Bytes::from(chunk)
        };
        self.sent += chunk.len() as u64;
        Ok(Some(chunk))
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

    /// The tests share the process-wide budget and disk state: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Everything `b` hands the worker, `max` bytes at most a piece, reading ahead as the
    /// exchange does when `fill` is true.
    async fn drain(b: &mut Buffered, max: usize, fill: bool) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if fill {
                b.fill(max as u64).await;
            }
            match b.next_chunk(max).unwrap() {
                Some(c) => {
                    assert!(!c.is_empty() && c.len() <= max);
                    out.extend_from_slice(&c);
                }
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_large_ones_go_to_a_file_in_batches() {
        let _one = SERIAL.lock().await;
        for fill in [true, false] {
            let mut b = Buffered::new();
            assert!(b.push(b"hello").await);
            assert!(b.file.is_none());
            let big = pattern(IN_MEMORY + 5 * WRITE_BATCH + 777);
            for piece in big.chunks(10_000) {
                assert!(b.push(piece).await);
            }
            assert!(b.file.is_some());
            assert!(b.file_len > 0 && !b.pending.is_empty());
            assert_eq!(b.len(), 5 + big.len() as u64);
            let out = drain(&mut b, 70_000, fill).await;
            assert!(b.is_drained());
            assert_eq!(&out[..5], b"hello");
            assert!(out[5..] == big[..], "fill: {fill}");
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn the_budget_is_given_back_when_a_buffer_goes() {
        let _one = SERIAL.lock().await;
        let before = HELD.load(Ordering::Relaxed);
        let mut b = Buffered::new();
        assert!(b.push(&[1u8; 1000]).await);
        assert!(HELD.load(Ordering::Relaxed) >= before + 1000);
        drop(b);
        assert!(HELD.load(Ordering::Relaxed) < before + 1000);
    }

    #[tokio::test]
    async fn a_nearly_full_temporary_directory_makes_the_body_stream() {
        let _one = SERIAL.lock().await;
        let set_room = |room| {
            let mut d = DISK.lock().unwrap();
            d.checked = Some(Instant::now());
            d.room = room;
            d.failed = None;
        };
        // Room for one write batch and a little more, not for the next one.
        set_room(WRITE_BATCH as u64 + 1000);
        let before = HELD.load(Ordering::Relaxed);
        let mut b = Buffered::new();
        let piece = vec![3u8; 10_000];
        let mut kept = 0;
        while b.push(&piece).await {
            kept += piece.len();
            assert!(
                kept < IN_MEMORY + 2 * WRITE_BATCH,
                "held past the disk's room"
            );
        }
        assert!(kept >= IN_MEMORY + WRITE_BATCH - piece.len(), "{kept}");
        assert_eq!(b.len(), kept as u64);
        assert_eq!(HELD.load(Ordering::Relaxed), before + kept as u64);
        // What was kept is all handed on.
        assert_eq!(drain(&mut b, 65_536, true).await.len(), kept);
        drop(b);
        DISK.lock().unwrap().checked = None;
    }
}
