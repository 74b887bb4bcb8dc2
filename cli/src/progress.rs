//! Progress bars on a terminal (indicatif), behind the library's `Progress`.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` bytes named `what` (a spinner when the total is not
/// known), hidden when `quiet` (as under `--json`). indicatif draws only
/// when stderr is a terminal.
pub(crate) fn bar(total: Option<u64>, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {msg} {bytes} {binary_bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// One bar per phase of a library call's work.
pub(crate) struct Bars {
    quiet: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars on stderr, or none when `quiet`.
    pub(crate) fn new(quiet: bool) -> std::sync::Arc<Bars> {
        std::sync::Arc::new(Bars { quiet, current: Mutex::new(None) })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl client::Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        if let Some(old) = self.current().replace(bar((total > 0).then_some(total), phase, self.quiet)) {
            old.finish_and_clear();
        }
    }
    fn set(&self, done: u64) {
        if let Some(b) = self.current().as_ref() {
            b.set_position(done);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.current().take() {
            b.finish_and_clear();
        }
    }
}
