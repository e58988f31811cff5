//! The memory budget of one rule run, counted by the process's allocator.
//!
//! rhai's own limits count elements, not bytes, and only on some paths: a map of
//! 2000 strings of 512 KiB each is "2000 entries", and building it with
//! `m[key] = s + i` is never checked against the string limit at all (measured:
//! 1 GiB resident and a success with a 1 MiB string limit; twice that and the
//! process aborted, nothing recorded). `on_progress` sees only an operation count,
//! not the values, so it cannot estimate live data by itself. What sees every byte
//! whatever path rhai takes is the allocator: [`Counting`] wraps the system
//! allocator and, on a thread where a rule runs ([`Meter::start`]), counts the
//! bytes allocated and freed. The rule's `on_progress` hook calls
//! [`Meter::exceeded`] before every operation and stops the run over budget.
//!
//! Three numbers are kept, all measured from the start of the run:
//!
//! - **live bytes** (allocated minus freed): what the rule holds now; the memory
//!   budget itself;
//! - **allocated bytes** (every allocation, freed or not): the work the rule
//!   makes the allocator do, bounded at [`WORK_FACTOR`] times the memory budget
//!   (the default outgoing rule on an issue of 100 000 comments allocates 170 MB
//!   in all and holds nothing at the end);
//! - **stack depth**: how far below the start of the run the deepest allocation
//!   or release happened. rhai copies, measures and drops nested arrays and maps
//!   recursively, allocating at every level, so this is the nesting of the
//!   deepest value the rule touched. Growing one (`a = [a]`) copies the whole
//!   value every step, small in bytes but quadratic in time: 20 000 steps took
//!   26 s, and deeper values overflowed the 2 MiB stack of the thread running the
//!   rule, killing the process. [`MAX_STACK`] stops such a run at a depth of a
//!   few thousand, within a second, well before the stack ends.
//!
//! Besides, [`MAX_RUN_TIME`] bounds the run's time: rhai checks its size limits
//! on many operations by walking the whole value, so a loop pushing onto a large
//! array is quadratic without allocating (99 000 pushes took 14 s), which neither
//! the operation limit nor the byte counts catch.
//!
//! The count is per thread (a thread-local without destructor, so reading it
//! never allocates), so rules running on several threads at once each see their
//! own. The check runs between operations, so one built-in operation can
//! overshoot while it builds its result, which rhai's per-value limits refuse
//! only once built (allocation cannot fail softly: Rust aborts). String
//! concatenation overshoots by at most twice [`super::MAX_STRING_SIZE`]; splitting
//! a 15 MB description into characters held about 1 GB for a moment, so `split`,
//! `split_rev` and `to_chars` are replaced by versions that count the pieces
//! first (125 MB peak, and an error naming the limit).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Total allocation a run may make, as a multiple of its memory budget.
pub const WORK_FACTOR: u64 = 4;
/// How far down the stack a run's allocations may happen, in bytes, below where
/// the run started: a fraction of the 2 MiB a thread running rules has, and far
/// more than a rule calling functions as deep as the call limit allows uses.
pub const MAX_STACK: usize = 512 * 1024;
/// How long one run may take: a rule is a few thousand operations on one issue,
/// done in milliseconds; this is for runaway loops whose every step is costly.
pub const MAX_RUN_TIME: Duration = Duration::from_secs(10);

/// Which budget a run went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The bytes it holds, [`Usage::live`].
    Memory,
    /// The bytes it allocated in all, [`Usage::allocated`].
    Work,
    /// The stack depth of its allocations ([`MAX_STACK`]): deeply nested values.
    Nesting,
    /// Its time ([`MAX_RUN_TIME`]).
    Time,
}

impl Over {
    /// All of them, for reading one back from its number.
    const ALL: [Over; 4] = [Over::Memory, Over::Work, Over::Nesting, Over::Time];

    /// As a number, for carrying it through rhai.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Back from [`Over::code`].
    pub fn from_code(code: i64) -> Option<Over> {
        Over::ALL.into_iter().find(|over| over.code() == code)
    }
}

/// The system allocator, counting on threads that run a rule.
pub struct Counting;

/// The counters of one thread.
struct Counters {
    /// A rule runs on this thread.
    on: Cell<bool>,
    /// Bytes allocated minus bytes freed since the run started.
    live: Cell<i64>,
    /// Bytes allocated since the run started.
    allocated: Cell<u64>,
    /// The address of the stack where the run started.
    base: Cell<usize>,
    /// The lowest stack address an allocation or release happened at since.
    low: Cell<usize>,
    /// When the run started.
    started: Cell<Option<Instant>>,
}

thread_local! {
    static COUNTERS: Counters = const {
        Counters {
            on: Cell::new(false),
            live: Cell::new(0),
            allocated: Cell::new(0),
            base: Cell::new(0),
            low: Cell::new(0),
            started: Cell::new(None),
        }
    };
}

/// About where the stack is now: the address of a local (stacks grow down on
/// every platform ferry runs on).
#[inline(always)]
fn stack_here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Counts `grown` bytes allocated and `shrunk` freed, if a rule runs here.
#[inline]
fn note(grown: usize, shrunk: usize) {
    // `try_with`: the allocator also runs while a thread's locals are destroyed.
    let _ = COUNTERS.try_with(|c| {
        if c.on.get() {
            c.live.set(c.live.get() + grown as i64 - shrunk as i64);
            c.allocated.set(c.allocated.get() + grown as u64);
            c.low.set(c.low.get().min(stack_here()));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counting around it
// touches only a thread-local of plain `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size(), 0);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size(), 0);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        note(0, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size, layout.size());
        }
        new
    }
}

/// What a run used, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes held now (allocated minus freed; negative when the run freed more
    /// than it allocated, as when it drops a value made before it started).
    pub live: i64,
    /// Bytes allocated in all.
    pub allocated: u64,
    /// Bytes of stack below the start of the run at the deepest allocation.
    pub stack: usize,
}

/// Counting on this thread while it lives: one per rule run. Runs do not nest
/// (a rule cannot start another), so starting one restarts the counts.
pub struct Meter(());

impl Meter {
    /// Starts counting on this thread, from zero.
    pub fn start() -> Meter {
        let here = stack_here();
        COUNTERS.with(|c| {
            c.on.set(true);
            c.live.set(0);
            c.allocated.set(0);
            c.base.set(here);
            c.low.set(here);
            c.started.set(Some(Instant::now()));
        });
        Meter(())
    }

    /// What the run on this thread used so far.
    pub fn usage() -> Usage {
        COUNTERS.with(|c| Usage {
            live: c.live.get(),
            allocated: c.allocated.get(),
            stack: c.base.get().saturating_sub(c.low.get()),
        })
    }

    /// Which budget, if any, the run on this thread is over, with a memory
    /// budget of `memory` bytes.
    pub fn exceeded(memory: u64) -> Option<Over> {
        let usage = Meter::usage();
        if usage.stack > MAX_STACK {
            Some(Over::Nesting)
        } else if usage.live > i64::try_from(memory).unwrap_or(i64::MAX) {
            Some(Over::Memory)
        } else if usage.allocated > memory.saturating_mul(WORK_FACTOR) {
            Some(Over::Work)
        } else if COUNTERS
            .with(|c| c.started.get())
            .is_some_and(|started| started.elapsed() > MAX_RUN_TIME)
        {
            Some(Over::Time)
        } else {
            None
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        COUNTERS.with(|c| c.on.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_counts_this_threads_allocations_only() {
        let meter = Meter::start();
        let kept = vec![0u8; 1 << 20];
        let other = std::thread::spawn(|| vec![0u8; 8 << 20].len());
        assert_eq!(other.join().unwrap(), 8 << 20);
        let usage = Meter::usage();
        assert!(usage.live >= 1 << 20 && usage.live < 2 << 20, "{usage:?}");
        drop(vec![0u8; 8 << 20]);
        let usage = Meter::usage();
        assert!(usage.live < 2 << 20, "{usage:?}");
        assert!(usage.allocated >= 9 << 20, "{usage:?}");
        assert_eq!(Meter::exceeded(1 << 19), Some(Over::Memory));
        assert_eq!(Meter::exceeded(2 << 20), Some(Over::Work));
        assert_eq!(Meter::exceeded(64 << 20), None);
        drop(kept);
        drop(meter);
        let before = Meter::usage();
        drop(vec![0u8; 1 << 20]);
        assert_eq!(Meter::usage(), before, "nothing counted outside a run");
    }
}
