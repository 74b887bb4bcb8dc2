//! Progress bars on a terminal (indicatif), behind the library's `Progress`.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` bytes named `what` (hidden when `quiet`, as under `--json`).
pub(crate) fn bar(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
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
        if let Some(old) = self.current().replace(bar(total, self.quiet, phase)) {
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
