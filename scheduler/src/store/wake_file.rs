//! Wake-ups between processes on one SQLite file, which has no `NOTIFY`.
//!
//! A small file beside the database (`<file>.wake`) is mapped into every process that uses
//! it. It holds a counter per topic (a slot: `Topic::index`) and a futex word. A process that signals adds one to
//! its topic's counter, moves the futex word and wakes whoever sleeps on it; each process that
//! waits has one thread asleep on the futex, which wakes the process's waiters of every topic
//! that *another* process signalled. A process counts its own signals apart, so its own
//! writes never come back to it: its waiters heard them through their channel already. (An
//! earlier design watched `PRAGMA data_version`, which moves with every commit of any
//! connection, this process's own included: a busy process woke itself after every write.)
//!
//! Nothing here is needed for correctness: a lost wake-up (the file cannot be created, a
//! process dies between the two additions) only leaves a waiter to its poll.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The mapped length: one page. The futex word is at offset 0, the slots' counters (8 bytes
/// each) from offset 8.
const LEN: usize = 4096;

/// How many topics the file carries.
pub(super) const SLOTS: usize = 2;

/// How long the watching thread sleeps at most, to notice a store that is gone.
const SLEEP: Duration = Duration::from_secs(1);

/// A shared page of memory, unmapped when dropped.
struct Mapping(*mut libc::c_void);

// SAFETY: the page is only read and written through atomics (`futex`, `counter`), which may be
// shared between threads (and, the page being MAP_SHARED, between processes).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the start of a mapping of `LEN` bytes made by `WakeFile::open`,
        // and nothing borrows from it any more (its borrows live no longer than `&self`).
        unsafe {
            libc::munmap(self.0, LEN);
        }
    }
}

/// One process's view of the wake file.
pub(super) struct WakeFile {
    page: Mapping,
    /// This process's own signals per topic. Adding to a topic's shared counter and to this
    /// happen under the lock, and the watcher reads both under it, so the difference counts
    /// exactly the signals of other processes.
    own: Mutex<[u64; SLOTS]>,
    /// Set by [`WakeFile::stop`]: the watching thread ends.
    stopped: AtomicBool,
}

impl std::fmt::Debug for WakeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeFile").finish_non_exhaustive()
    }
}

impl WakeFile {
    /// Opens (creating it if needed) the wake file of the SQLite database at `database`.
    pub(super) fn open(database: &Path) -> std::io::Result<WakeFile> {
        let mut name = database.as_os_str().to_owned();
        name.push(".wake");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(Path::new(&name))?;
        if file.metadata()?.len() < LEN as u64 {
            file.set_len(LEN as u64)?;
        }
        // SAFETY: a fresh shared mapping of a file at least `LEN` bytes long; the kernel picks
        // the address. Amdahl never shrinks the file, so the page stays backed.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(WakeFile {
            page: Mapping(page),
            own: Mutex::new([0; SLOTS]),
            stopped: AtomicBool::new(false),
        })
    }

    fn futex(&self) -> &AtomicU32 {
        // SAFETY: offset 0 of a live, page-aligned mapping of `LEN` bytes; `AtomicU32` has the
        // layout of a `u32` and the page is only ever accessed atomically.
        unsafe { &*(self.page.0 as *const AtomicU32) }
    }

    fn counter(&self, slot: usize) -> &AtomicU64 {
        assert!(slot < SLOTS, "no slot {slot}");
        // SAFETY: offsets 8, 16, … are 8-byte aligned and inside the mapping; as in `futex`.
        unsafe { &*((self.page.0 as *const u8).add(8 + 8 * slot) as *const AtomicU64) }
    }

    fn own(&self) -> std::sync::MutexGuard<'_, [u64; SLOTS]> {
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the other processes on this file that the topic of `slot` moved.
    pub(super) fn signal(&self, slot: usize) {
        {
            let mut own = self.own();
            self.counter(slot).fetch_add(1, Ordering::SeqCst);
            own[slot] = own[slot].wrapping_add(1);
        }
        self.futex().fetch_add(1, Ordering::SeqCst);
        futex_wake(self.futex());
    }

    /// The signals of other processes per slot, as counters to compare with earlier ones.
    fn others(&self) -> [u64; SLOTS] {
        let own = self.own();
        std::array::from_fn(|slot| {
            self.counter(slot)
                .load(Ordering::SeqCst)
                .wrapping_sub(own[slot])
        })
    }

    /// Ends the watching thread soon.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.futex().fetch_add(1, Ordering::SeqCst);
        futex_wake(self.futex());
    }
}

/// Starts the thread that hears other processes' signals: after each wake-up (and at least
/// every second) it calls `heard` with the slots that another process signalled since the last
/// call, until `heard` returns false (the store is gone) or the file is stopped.
pub(super) fn watch(
    file: Arc<WakeFile>,
    heard: impl Fn([bool; SLOTS]) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("amdahl-wake".into())
        .spawn(move || {
            let mut seen = file.others();
            loop {
                // The word is read before the counters: a signal after this point moves the
                // word, so the sleep below returns at once and the loop looks again.
                let word = file.futex().load(Ordering::SeqCst);
                let now = file.others();
                if file.stopped.load(Ordering::SeqCst)
                    || !heard(std::array::from_fn(|slot| now[slot] != seen[slot]))
                {
                    return;
                }
                seen = now;
                futex_wait(file.futex(), word, SLEEP);
            }
        })
        .map(drop)
}

/// Sleeps while `word` holds `expected`, at most `timeout` (FUTEX_WAIT, shared between
/// processes: not the `_PRIVATE` form). Returns early on a wake, a changed word or a signal.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned 32-bit word and `timeout` outlives the call; the
    // kernel only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes every thread, in any process, asleep on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}
