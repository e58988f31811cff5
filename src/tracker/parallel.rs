//! Requests about single issues, several at once.
//!
//! A connector's cost per issue is round trips, not the server's work: at
//! 50 ms to a distant tracker, reading 1 000 issues one after the other takes
//! 50 s whatever the server does. Both HTTP connectors send such requests a
//! bounded number at a time (`tracker.concurrency`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::TrackerError;

/// Four requests at once: a fourfold speed-up on a distant server, well
/// inside what Jira Cloud's rate limits, a Data Center node or a Redmine
/// allow one client.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Runs `work` on every item, `concurrency` at a time (each a round trip or
/// a few), and returns the answers in the items' order.
pub(crate) fn side_by_side<T: Sync, R: Send>(
    concurrency: usize,
    items: &[T],
    work: impl Fn(&T) -> Result<R, TrackerError> + Sync,
) -> Vec<Result<R, TrackerError>> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<R, TrackerError>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    let workers = concurrency.max(1).min(items.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let answer = work(item);
                    *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| {
                    Err(TrackerError::Unavailable(
                        "a request worker stopped unexpectedly".into(),
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn answers_come_back_in_order_with_at_most_the_limit_at_once() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<usize> = (0..40).collect();
        let started = Instant::now();
        let answers = side_by_side(4, &items, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            if i == 7 {
                return Err(TrackerError::Unavailable("seven".into()));
            }
            Ok(i * 2)
        });
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(most.load(Ordering::SeqCst) <= 4);
        assert!(most.load(Ordering::SeqCst) > 1);
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(e) => assert!(i == 7 && e.to_string().contains("seven")),
            }
        }
        assert!(side_by_side(4, &[] as &[usize], |&i| Ok(i)).is_empty());
    }
}
