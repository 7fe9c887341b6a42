//! Whether this process is a child the application forked from the worker: a flag set by
//! a `pthread_atfork` handler, so the per-request check costs no syscall.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static IN_CHILD: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

extern "C" fn after_fork_in_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
}

/// Registers the handler; call once before the application can fork.
pub(crate) fn watch() {
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork only stores the handler pointers; the child handler is an
        // async-signal-safe atomic store, as handlers run in the child right after fork().
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            tracing::warn!(
                error = rc,
                "could not watch for forks; a forked child of the application may answer requests"
            );
        }
    });
}

/// True in a process forked from the worker (the worker itself never is one).
pub(crate) fn in_child() -> bool {
    IN_CHILD.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_knows_it_is_one() {
        watch();
        assert!(!in_child());
        // SAFETY: the child only reads an atomic and calls _exit, both fork-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: _exit in the forked child, skipping the test harness's exit path.
            unsafe { libc::_exit(if in_child() { 0 } else { 1 }) }
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; status is a live local.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(!in_child());
    }
}
