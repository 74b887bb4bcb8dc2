//! The personal drive on ionshard, part one: a person's own devices and
//! clients pair by a short one-time code, and keep the pairings.
//!
//! - [`Code`]: `NAMEPLATE-word-word-word`, printed by the device.
//! - [`mailbox`]: the slots a bootstrap node keeps for codes, and its wire
//!   messages (`/ionshard/mailbox/1`): a pure state machine.
//! - [`offer`] and [`accept`]: the two sides of a pairing, SPAKE2 over the
//!   mailbox and one sealed, signed message each way, over any
//!   [`Transport`] to a mailbox.
//! - [`Pairs`]: the pairings a node keeps (its own devices and clients),
//!   in a file written whole or not at all.
//!
//! Never: pair without the code's words (the mailbox sees neither them nor
//! the key), accept a second guess at a code, or record a peer whose
//! signature over this exchange does not verify.

mod balance;
mod bytes;
mod code;
pub mod dav;
mod device;
mod error;
mod files;
pub mod friends;
mod keys;
pub mod mailbox;
mod pairing;
mod pairs;
pub mod post;
pub mod protocol;
mod remote;
pub mod served;
pub mod sync;
pub mod tree;

pub use balance::Balanced;
pub use code::{CODE_WORDS, Code, MAX_NAMEPLATE, WORDS};
pub use device::{Device, Session};
pub use error::{Error, Result};
pub use files::lock;
pub use keys::new_recovery_code;
pub use pairing::{FriendKey, Me, Paired, Role, Transport, accept, offer};
pub use pairs::{Pair, Pairs, Revoked};
pub use remote::{
    Drive, Login, PasswordCheck, Reached, Read, RootId, Stored, change_password, coding_for, login, login_checked,
    logout, setup, survives,
};
