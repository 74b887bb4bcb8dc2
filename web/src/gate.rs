//! Who may use the served drive: whoever gives the drive's password. The
//! check is argon2 (64 MiB, on the client), so it runs once per password
//! found right, one at a time; a wrong one holds the line for a second
//! after its check, so guesses go at most one a second however many
//! connections send them, and only a few wait: more are told to come back.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A wrong password holds the check this long.
const WRONG_PAUSE: Duration = Duration::from_secs(1);
/// Checks waiting at once, at most; more are answered [`Verdict::Busy`].
const WAITING: usize = 8;

/// What the gate says of a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The drive's password.
    Yes,
    /// Not the drive's password.
    No,
    /// Too many checks are waiting: ask again shortly.
    Busy,
}

/// The drive's password check, shared by the web page and WebDAV.
pub struct Gate {
    check: drive::PasswordCheck,
    /// BLAKE3 of passwords found right (argon2 runs once per password).
    known: Mutex<HashSet<[u8; 32]>>,
    /// One argon2 at a time.
    checking: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

/// One waiting check, counted while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// A gate that opens for the password `check` was made from.
    pub fn new(check: drive::PasswordCheck) -> Gate {
        Gate { check, known: Mutex::default(), checking: tokio::sync::Semaphore::new(1), waiting: AtomicUsize::new(0) }
    }

    /// Is `password` the drive's?
    pub async fn admits(&self, password: &str) -> Verdict {
        let tag = *blake3::hash(password.as_bytes()).as_bytes();
        if self.known.lock().unwrap_or_else(|p| p.into_inner()).contains(&tag) {
            return Verdict::Yes;
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Verdict::Busy;
        }
        let _waiting = Waiting(&self.waiting);
        let Ok(_one) = self.checking.acquire().await else { return Verdict::No };
        let (check, pw) = (self.check.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || check.check(&pw)).await.unwrap_or(false);
        if ok {
            self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(tag);
            Verdict::Yes
        } else {
            // Held with the permit: the next guess waits too.
            tokio::time::sleep(WRONG_PAUSE).await;
            Verdict::No
        }
    }
}
