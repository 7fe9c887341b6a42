//! The few system calls bench needs that the standard library and socket2 do not expose:
//! `TCP_INFO` (SYN retransmits of one connect) and the open-files limit.

use std::os::fd::RawFd;

/// Retransmitted segments of the socket so far (`tcpi_total_retrans`); read right after
/// `connect()` completes or gives up, it counts the SYN retransmits of that connect.
#[cfg(target_os = "linux")]
pub(crate) fn total_retrans(fd: RawFd) -> Option<u32> {
    // Raw bytes rather than a libc::tcp_info value, so reading the one field needs no unsafe.
    let mut info = [0u8; std::mem::size_of::<libc::tcp_info>()];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the
    // kernel writes at most `len` bytes into `info`, which is exactly that large and lives on
    // this stack frame, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Older kernels fill a shorter struct; tcpi_total_retrans must be inside what was filled.
    let offset = std::mem::offset_of!(libc::tcp_info, tcpi_total_retrans);
    let field = info.get(offset..offset + 4)?;
    if rc != 0 || (len as usize) < offset + 4 {
        return None;
    }
    Some(u32::from_ne_bytes(field.try_into().ok()?))
}

/// Not available off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn total_retrans(_fd: RawFd) -> Option<u32> {
    None
}

/// The soft open-files limit, if it can be read.
pub(crate) fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit struct we pass, which lives on this frame.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

/// Raises the soft open-files limit to the hard limit and returns the limit now in force, so
/// a storm of thousands of connections is not cut at the usual soft limit of 1024.
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit struct we pass, which lives on this frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass; raising the soft limit up to the
        // hard limit needs no privilege and affects only this process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}
