//! Progress bars for long steps (an export of 100k issues, a big import), drawn
//! on stderr only when a person is watching: hidden when stderr is not a
//! terminal (cron, pipes, tests) and under `-q`.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every progress bar from now on (`-q`).
pub fn hide() {
    HIDDEN.store(true, Ordering::Relaxed);
}

/// A bar counting `len` items of a step, e.g. `import engineering`. Small steps
/// get no bar: it would only flicker.
pub fn bar(len: usize, label: String) -> ProgressBar {
    const WORTH_A_BAR: usize = 200;
    if HIDDEN.load(Ordering::Relaxed) || len < WORTH_A_BAR {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when stderr is not a terminal.
    // Cleared when the step ends, however it ends: the report follows on stdout.
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr())
        .with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar
}
