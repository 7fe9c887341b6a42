//! Test fixtures shared by Spillway's test suites (the end-to-end tests of the binary and
//! the front's tests against a fake worker): a raw HTTP/1.1 client that hides nothing, a
//! JSON reader for what test applications print, and small helpers. Never a dependency of
//! anything shipped.

pub mod http;
pub mod json;

use std::time::{Duration, Instant};

pub use http::{show, Conn, Head, Response};
pub use json::Json;

/// Default timeout of every socket read, and bound of every "wait for X" loop.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CRC-32 (IEEE), as Python's `zlib.crc32`.
pub struct Crc32 {
    table: [u32; 256],
    value: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *t = c;
        }
        Crc32 {
            table,
            value: 0xFFFF_FFFF,
        }
    }
}

impl Crc32 {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.value;
        for &b in data {
            c = self.table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.value = c;
    }

    /// The checksum of everything added.
    pub fn finish(&self) -> u32 {
        self.value ^ 0xFFFF_FFFF
    }
}

/// Deterministic pseudo-random bytes (xorshift), so uploads are not trivially compressible
/// or repetitive; a reordered or duplicated piece changes the CRC.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
