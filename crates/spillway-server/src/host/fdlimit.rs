//! The open-files limit. Every client connection, held body and worker link is a file
//! descriptor; the soft `RLIMIT_NOFILE` most hosts start a process with (1024) is far below
//! what `--max-connections` allows, and running out looks like anything but its cause
//! (uploads refused, workers that cannot be replaced). At start the soft limit is raised to
//! the hard one and both numbers are logged; a limit still too low is a warning.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors the front needs besides client connections: listeners, the admin endpoint,
/// logs, two per worker link, the temporary files of held bodies.
const HEADROOM: u64 = 256;

/// The soft limit the front started with, restored in workers (0: not changed): Python
/// code may still use select(2), which cannot take descriptors above 1023.
static INHERITED_SOFT: AtomicU64 = AtomicU64::new(0);

/// The open-files limits before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nofile {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

fn get() -> io::Result<libc::rlimit> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Raises the soft open-files limit to the hard one.
pub(crate) fn raise() -> io::Result<Nofile> {
    let before = get()?;
    if before.rlim_cur < before.rlim_max {
        let want = libc::rlimit {
            rlim_cur: before.rlim_max,
            rlim_max: before.rlim_max,
        };
        // SAFETY: setrlimit(2) reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let now = get()?;
    if now.rlim_cur != before.rlim_cur {
        INHERITED_SOFT.store(before.rlim_cur, Ordering::Relaxed);
    }
    Ok(Nofile {
        soft_before: before.rlim_cur,
        soft: now.rlim_cur,
        hard: now.rlim_max,
    })
}

/// In a child between fork and exec: puts back the soft limit the front started with.
/// Only async-signal-safe calls (an atomic load, getrlimit, setrlimit).
pub(crate) fn restore_inherited() {
    let soft = INHERITED_SOFT.load(Ordering::Relaxed);
    if soft == 0 {
        return;
    }
    if let Ok(mut r) = get() {
        r.rlim_cur = soft.min(r.rlim_max);
        // SAFETY: setrlimit(2) reads one rlimit from a struct we own.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

/// Descriptors `--max-connections` and `workers` need.
pub(crate) fn needed(max_connections: usize, workers: usize) -> u64 {
    max_connections as u64 + 4 * workers as u64 + HEADROOM
}

/// Raises the limit and says what it is: once at INFO, and a WARN when it is below what
/// `needed` descriptors take.
pub(crate) fn raise_and_log(needed: u64) {
    match raise() {
        Ok(n) if n.soft < needed => tracing::warn!(
            soft_limit = n.soft,
            soft_limit_was = n.soft_before,
            hard_limit = n.hard,
            needed,
            "open-files limit (RLIMIT_NOFILE) is below what --max-connections needs; raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn) or lower --max-connections"
        ),
        Ok(n) => tracing::info!(
            soft_limit = n.soft,
            soft_limit_was = n.soft_before,
            hard_limit = n.hard,
            needed,
            "open-files limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

/// Whether `e` says the process or the system ran out of file descriptors.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What an operator should read after `e`, when it is descriptor exhaustion.
pub(crate) fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => {
            "out of file descriptors: the open-files limit (RLIMIT_NOFILE) of the front is reached"
        }
        Some(libc::ENFILE) => {
            "out of file descriptors: the system-wide limit (fs.file-max) is reached"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let n = raise().expect("rlimit");
        assert_eq!(n.soft, n.hard);
        assert!(n.soft >= n.soft_before);
    }

    #[test]
    fn exhaustion_is_told_apart_from_other_errors() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_exhaustion(&emfile));
        assert!(hint(&emfile).contains("open-files limit"));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::ENOENT)));
    }
}
