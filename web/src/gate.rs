//! Who may use the served drive: whoever gives the drive's password. The
//! check is argon2 (64 MiB, on the client), so it runs once per password
//! found right, one at a time; a wrong one holds the line for a second
//! after its check, so guesses go at most one a second however many
//! connections send them, and only a few wait: more are told to come back.
//!
//! A check, once begun, runs to its end (the pause included) in a task of
//! its own: a client that hangs up midway frees neither the line nor its
//! place among the waiting (it did, and argon2's 64 MiB piled up in the
//! blocking pool with every request dropped 10 ms after it was sent).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Whether a password is right (the slow check).
type Check = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The drive's password check, shared by the web page and WebDAV.
pub struct Gate {
    check: Check,
    /// BLAKE3 of passwords found right (argon2 runs once per password).
    known: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// One argon2 at a time.
    checking: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

/// One waiting check, counted while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// A gate that opens for the password `check` was made from.
    pub fn new(check: drive::PasswordCheck) -> Gate {
        Gate::checking_with(Arc::new(move |pw: &str| check.check(pw)))
    }

    fn checking_with(check: Check) -> Gate {
        Gate {
            check,
            known: Arc::default(),
            checking: Arc::new(tokio::sync::Semaphore::new(1)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
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
        let waiting = Waiting(self.waiting.clone());
        let (checking, known) = (self.checking.clone(), self.known.clone());
        let (check, pw) = (self.check.clone(), password.to_string());
        let job = tokio::spawn(async move {
            let _waiting = waiting;
            let Ok(_one) = checking.acquire_owned().await else { return Verdict::No };
            let ok = tokio::task::spawn_blocking(move || check(&pw)).await.unwrap_or(false);
            if ok {
                known.lock().unwrap_or_else(|p| p.into_inner()).insert(tag);
                Verdict::Yes
            } else {
                // Held with the permit: the next guess waits too.
                tokio::time::sleep(WRONG_PAUSE).await;
                Verdict::No
            }
        });
        job.await.unwrap_or(Verdict::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guesses sent and dropped 10 ms later, again and again: each dropped
    /// guess freed its place and the line while its check ran on, so the
    /// checks piled up (64 MiB each) and no guess ever waited its second.
    #[tokio::test]
    async fn a_check_dropped_midway_still_holds_the_line() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let gate = Arc::new(Gate::checking_with(Arc::new(move |_: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            false
        })));
        for i in 0..WAITING {
            let g = gate.clone();
            let guess = tokio::spawn(async move { g.admits(&format!("guess {i}")).await });
            tokio::time::sleep(Duration::from_millis(10)).await;
            guess.abort();
        }
        let next = tokio::time::timeout(Duration::from_millis(500), gate.admits("one more")).await;
        assert_eq!(next.ok(), Some(Verdict::Busy), "the dropped guesses still wait their turn");
        assert!(runs.load(Ordering::SeqCst) <= 1, "one check at a time: {} ran", runs.load(Ordering::SeqCst));
    }
}
