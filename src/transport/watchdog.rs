//! A fetch or push over a URL that stops moving ends the run.
//!
//! A fetch over ssh or https goes through libgit2, which indexes the pack the
//! server sends with its own `Indexer`. That indexer loops for ever, allocating
//! as it goes, on a pack where a delta builds an object it cannot store (one
//! the pack holds already, or a tree it cannot parse) and the object database
//! can lend a base (see [`crate::pack::index`], which reads bundles for that
//! reason). A stock git server does not send such a pack, but whoever controls
//! the server, or can push a malformed object into it, could; nothing in libgit2
//! lets ferry index a fetched pack itself. A server that stops sending in the
//! middle of a pack hangs a run the same way.
//!
//! So while libgit2 fetches, a watchdog thread looks at its progress reports.
//! libgit2 reports every few objects received and every delta resolved; while
//! the pack is still arriving, a silence of [`DOWNLOAD_STALL`] is a server that
//! stopped; once every object has arrived, a silence of [`INDEXING_STALL`] is an
//! indexer that is not getting anywhere (writing the index of a large pack
//! takes seconds, not minutes). Either ends the process at once, with a message
//! naming the channel and exit code 3: libgit2 cannot be interrupted, and what
//! the run leaves is what a kill leaves, which every step of ferry survives
//! (the lock is released, the ledger's transaction rolls back, the half-indexed
//! pack is a temporary file).
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest silence while the pack arrives.
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(10 * 60);
/// The longest silence once every object of the pack has arrived.
pub const INDEXING_STALL: Duration = Duration::from_secs(60);
/// Sets both silences, in seconds, where the defaults do not fit (a link
/// that pauses for longer; a test that cannot wait ten minutes).
pub const ENV_STALL: &str = "FERRY_FETCH_STALL_SECS";

/// What libgit2 last reported.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    received: usize,
    total: usize,
    resolved: usize,
}

/// The two silences: [`DOWNLOAD_STALL`] and [`INDEXING_STALL`], or both
/// [`ENV_STALL`] when it is set.
fn limits() -> (Duration, Duration) {
    match std::env::var(ENV_STALL)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(secs) => (Duration::from_secs(secs), Duration::from_secs(secs)),
        None => (DOWNLOAD_STALL, INDEXING_STALL),
    }
}

/// Whether a fetch whose last report is `seen` has been silent too long at
/// `now` (limits: while arriving, once arrived), and what to say if so.
fn stalled(
    seen: &Seen,
    now: Instant,
    (download, indexing): (Duration, Duration),
) -> Option<String> {
    let silent = now.saturating_duration_since(seen.at);
    let arrived = seen.total > 0 && seen.received >= seen.total;
    if arrived && silent > indexing {
        Some(format!(
            "indexing the pack from the channel made no progress for {} s after {} of its \
             objects were resolved: a pack libgit2 cannot index (a hostile or broken server)",
            silent.as_secs(),
            seen.resolved
        ))
    } else if !arrived && silent > download {
        Some(format!(
            "the channel sent nothing for {} s ({} of {} objects received)",
            silent.as_secs(),
            seen.received,
            seen.total
        ))
    } else {
        None
    }
}

/// The progress of one fetch or push, and the thread that watches it.
/// Dropping it (libgit2 returned) stops the thread. A push reports no objects
/// received, so only the longer silence applies to it.
pub struct Watchdog {
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts watching a fetch from `channel` (named in the message).
    pub fn start(channel: String) -> Watchdog {
        let seen = Arc::new(Mutex::new(Seen {
            at: Instant::now(),
            received: 0,
            total: 0,
            resolved: 0,
        }));
        let done = Arc::new(AtomicBool::new(false));
        let (watched, finished) = (Arc::clone(&seen), Arc::clone(&done));
        let limits = limits();
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let last = *watched.lock().unwrap_or_else(PoisonError::into_inner);
                if finished.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(why) = stalled(&last, Instant::now(), limits) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: fetching from {channel}: {why}; the run ends here (exit 3), \
                         nothing was applied"
                    );
                    // libgit2 holds the main thread; exit without running
                    // anything that could wait on it.
                    unsafe { libc::_exit(3) };
                }
            }
        });
        Watchdog { seen, done }
    }

    /// Records a progress report of libgit2 (its `transfer_progress`).
    pub fn report(&self, received: usize, total: usize, resolved: usize) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Seen {
            at: Instant::now(),
            received,
            total,
            resolved,
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_judged_by_whether_the_pack_has_arrived() {
        let start = Instant::now();
        let seen = |received, total| Seen {
            at: start,
            received,
            total,
            resolved: 7,
        };
        let after = |d: Duration| start + d;
        let limits = (DOWNLOAD_STALL, INDEXING_STALL);
        // Arriving: minutes of silence are a slow server, until the limit.
        assert!(stalled(&seen(10, 100), after(Duration::from_secs(120)), limits).is_none());
        let gone = stalled(
            &seen(10, 100),
            after(DOWNLOAD_STALL + Duration::from_secs(1)),
            limits,
        );
        assert!(gone.unwrap().contains("10 of 100 objects received"));
        // Nothing announced yet counts as arriving.
        assert!(stalled(&seen(0, 0), after(INDEXING_STALL * 2), limits).is_none());
        // Arrived: a minute without a resolved delta is an indexer that loops.
        assert!(stalled(&seen(100, 100), after(Duration::from_secs(30)), limits).is_none());
        let looping = stalled(
            &seen(100, 100),
            after(INDEXING_STALL + Duration::from_secs(1)),
            limits,
        );
        assert!(
            looping
                .unwrap()
                .contains("after 7 of its objects were resolved")
        );
    }

    #[test]
    fn reports_move_the_clock_and_dropping_stops_the_watch() {
        let dog = Watchdog::start("ssh://example.invalid/exchange.git".into());
        let before = dog.seen.lock().unwrap().at;
        std::thread::sleep(Duration::from_millis(5));
        dog.report(3, 9, 1);
        let now = *dog.seen.lock().unwrap();
        assert!(now.at > before);
        assert_eq!((now.received, now.total, now.resolved), (3, 9, 1));
        let done = Arc::clone(&dog.done);
        drop(dog);
        assert!(done.load(Ordering::Relaxed));
    }
}
