//! The clap types of `ionshard vendor …`, and their dispatch.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub(crate) enum VendorCommand {
    /// Create vendor keys and the first root.
    Init {
        /// The vendor's name (in every root and release).
        #[arg(long)]
        name: String,
        /// Keys to create (give them to different people: `vendor key export`).
        #[arg(long, default_value_t = 3)]
        keys: u32,
        /// Signatures required on releases and root changes.
        #[arg(long, default_value_t = 2)]
        threshold: u32,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Change the root's keys (a new root version, signed by the old and new keys).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Re-sign a published release with a later expiry (same image); updates the bundle file.
    Resign {
        /// The release bundle `ionshard publish` wrote.
        bundle: PathBuf,
        /// The SPN that serves it.
        #[arg(long, env = "IONSHARD_SPN")]
        spn: String,
        /// API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// Days from now until devices refuse it.
        #[arg(long, default_value_t = 90)]
        expires_days: u64,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Print the current root.
    Show {
        #[command(flatten)]
        at: VendorAt,
    },
    /// Register the vendor's roots with an SPN (once; later it sends new roots).
    Register {
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Re-sign the short-lived statement of the newest release per hardware
    /// (run it from cron or a systemd timer, every few hours).
    Timestamp {
        /// Product (repeatable) [default: every product published from this directory].
        #[arg(long)]
        product: Vec<String>,
        /// Hours until devices refuse the statement.
        #[arg(long, default_value_t = 24)]
        expires_hours: u64,
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Withdraw a release (PRODUCT@VERSION): the SPN stops serving it.
    Withdraw {
        /// The release.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Add your signature to a pending release, root or withdrawal.
    Sign {
        /// The pending file.
        file: PathBuf,
        /// Key file to sign with (repeatable) [default: the keys in --dir].
        #[arg(long)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Send a pending release, root or withdrawal once enough keys signed it.
    Submit {
        /// The pending file.
        file: PathBuf,
        /// The SPN to send it to (a root is kept locally either way).
        #[arg(long, env = "IONSHARD_SPN")]
        spn: Option<String>,
        /// API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        at: VendorAt,
    },
}

/// The SPN a vendor command talks to.
#[derive(clap::Args)]
pub(crate) struct VendorSpn {
    /// The SPN's API, e.g. http://127.0.0.1:7800.
    #[arg(long, env = "IONSHARD_SPN")]
    spn: String,
    /// API token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long)]
    token: Option<String>,
}

#[derive(clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Add a new key.
    Add(KeyArgs),
    /// Replace key KEYID with a new one (the old key is retired).
    Rotate {
        /// The key to retire.
        keyid: String,
        #[command(flatten)]
        args: KeyArgs,
    },
    /// Make a new online timestamp key (the first, or replacing the old one).
    Timestamp(KeyArgs),
    /// Move a key out of the vendor directory, to give it to its holder.
    Export {
        /// The key.
        keyid: String,
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Copy, do not remove it from the vendor directory.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Bring a key of the current root into the vendor directory.
    Import {
        /// The key file.
        file: PathBuf,
        #[command(flatten)]
        at: VendorAt,
    },
}

#[derive(clap::Args)]
pub(crate) struct KeyArgs {
    /// New threshold [default: unchanged].
    #[arg(long)]
    threshold: Option<u32>,
    /// Days until the new root expires.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
    #[command(flatten)]
    at: VendorAt,
}

/// Where the vendor's keys and roots are, and the output form.
#[derive(clap::Args)]
pub(crate) struct VendorAt {
    /// Vendor directory [default: ~/.ionshard/vendor].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl VendorAt {
    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(super::default_dir)
    }
}

/// Run `ionshard vendor …`.
pub(crate) fn run(command: VendorCommand) -> Result<()> {
    match command {
        VendorCommand::Init { name, keys, threshold, expires_days, at } => {
            super::init(&at.dir(), &name, keys, threshold, expires_days, at.json)
        }
        VendorCommand::Key { command: KeyCommand::Add(a) } => {
            super::change_keys(&a.at.dir(), super::KeyChange::Add, a.threshold, a.expires_days, a.at.json)
        }
        VendorCommand::Key { command: KeyCommand::Rotate { keyid, args: a } } => {
            super::change_keys(&a.at.dir(), super::KeyChange::Rotate(&keyid), a.threshold, a.expires_days, a.at.json)
        }
        VendorCommand::Key { command: KeyCommand::Timestamp(a) } => {
            super::change_keys(&a.at.dir(), super::KeyChange::Timestamp, a.threshold, a.expires_days, a.at.json)
        }
        VendorCommand::Key { command: KeyCommand::Export { keyid, out, keep, at } } => {
            super::export_key(&at.dir(), &keyid, &out, keep, at.json)
        }
        VendorCommand::Key { command: KeyCommand::Import { file, at } } => super::import_key(&at.dir(), &file, at.json),
        VendorCommand::Register { spn, at } => super::register(&at.dir(), &spn.spn, spn.token, at.json),
        VendorCommand::Timestamp { product, expires_hours, spn, at } => {
            super::timestamp(&at.dir(), &product, &spn.spn, spn.token, expires_hours, at.json)
        }
        VendorCommand::Withdraw { id, reason, spn, at } => {
            super::withdraw(&at.dir(), &id, &reason, &spn.spn, spn.token, at.json)
        }
        VendorCommand::Sign { file, key, at } => super::sign(&file, &key, &at.dir(), at.json),
        VendorCommand::Submit { file, spn, token, at } => {
            super::submit(&file, &at.dir(), spn.as_deref(), token, at.json)
        }
        VendorCommand::Show { at } => super::show(&at.dir(), at.json),
        VendorCommand::Resign { bundle, spn, token, expires_days, at } => {
            super::resign(&bundle, &spn, token, &at.dir(), expires_days, at.json)
        }
    }
}
