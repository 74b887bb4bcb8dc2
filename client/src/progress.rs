//! How long work says how far it is. The CLI draws bars (indicatif); tests,
//! scripts and web handlers pass [`Hidden`] or their own.

/// A sink for the progress of one piece of work, in phases of bytes.
pub trait Progress: Send + Sync {
    /// A phase (`"upload"`, `"fetch"`) of `total` bytes begins (0: unknown).
    fn start(&self, phase: &str, total: u64);
    /// `done` bytes of the current phase are done.
    fn set(&self, done: u64);
    /// The current phase is over (done or given up).
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hidden;

impl Progress for Hidden {
    fn start(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}
