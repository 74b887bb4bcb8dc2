//! Everything that can go wrong with a release or a fetch.

/// Errors of the ota crate. Each says what was wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not valid metadata.
    #[error("malformed metadata: {0}")]
    Malformed(String),
    /// Over a size limit; refused before parsing.
    #[error("{what} is {len} bytes, over the limit of {limit} bytes; refused unread")]
    TooLarge {
        /// Which document.
        what: String,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Signed only by keys the trusted root does not list.
    #[error(
        "{what} is signed by unknown key(s) {keyids}, none of them in the trusted root v{root_version}; \
         it is not from this vendor (or the device needs the vendor's newer root)"
    )]
    UnknownKey {
        /// Which document.
        what: String,
        /// The key ids that signed it.
        keyids: String,
        /// The trusted root's version.
        root_version: u64,
    },
    /// Too few valid signatures.
    #[error("{what} has {have} valid signature(s) of the {need} root v{root_version} requires")]
    BelowThreshold {
        /// Which document.
        what: String,
        /// Valid distinct signatures.
        have: usize,
        /// The threshold.
        need: usize,
        /// The root whose threshold was applied.
        root_version: u64,
    },
    /// Past its expiry.
    #[error("{what} expired at {expires} (seconds since the epoch); ask the vendor to re-sign it, or check the clock")]
    Expired {
        /// Which document.
        what: String,
        /// When.
        expires: u64,
    },
    /// Older than what is installed.
    #[error("release version {offered} is older than the installed {installed}; refused (rollback protection)")]
    Rollback {
        /// Installed version.
        installed: String,
        /// Offered version.
        offered: String,
    },
    /// A root that does not follow the trusted one.
    #[error("root version {offered} does not follow the trusted root version {trusted}")]
    RootVersion {
        /// Trusted root version.
        trusted: u64,
        /// Offered root version.
        offered: u64,
    },
    /// For other hardware.
    #[error("release is for hardware [{release}], this device is {device}; refused")]
    WrongHardware {
        /// The device's hardware.
        device: String,
        /// What the release fits.
        release: String,
    },
    /// For another product.
    #[error("release is for product {release}, this device is {device}; refused")]
    WrongProduct {
        /// The device's product.
        device: String,
        /// The release's product.
        release: String,
    },
    /// A confidential release, and no product key given.
    #[error("release of {0} is confidential: it needs the product key the vendor gave this product")]
    NeedProductKey(String),
    /// The device has no root of its own yet and was given none.
    #[error("no trusted vendor root: give the vendor's root.json once; it is kept in {}", .0.display())]
    NoRoot(std::path::PathBuf),
    /// The product key does not open the read key.
    #[error("the product key given does not open the read key of this {0} release")]
    WrongProductKey(String),
    /// The trusted root names no timestamp role (a root from before timestamps).
    #[error(
        "root v{root_version} of vendor {vendor} names no timestamp key, so this device cannot check that it \
         is offered the newest release; ask the vendor for a root with one (`ionshard vendor key timestamp`)"
    )]
    NoTimestampRole {
        /// The vendor.
        vendor: String,
        /// Its root's version.
        root_version: u64,
    },
    /// No timestamp where one is needed.
    #[error(
        "no timestamp came with this release of {product}: the device cannot tell whether a newer release is \
         being withheld from it; update through the SPN (which serves the vendor's timestamp), or update \
         offline on purpose"
    )]
    NoTimestamp {
        /// The product.
        product: String,
    },
    /// A timestamp past its expiry.
    #[error(
        "the timestamp of {product} expired at {expired} (now {now}, seconds since the epoch): the vendor has not \
         re-signed it (its `ionshard vendor timestamp` job may have stopped), or whoever serves it is replaying \
         an old one, or this device's clock is wrong; nothing installed was changed"
    )]
    StaleTimestamp {
        /// The product.
        product: String,
        /// When it expired.
        expired: u64,
        /// The device's clock.
        now: u64,
    },
    /// A timestamp issued later than the clock allows.
    #[error("the timestamp of {product} was issued at {issued}, after this device's time {now}: check the clock")]
    TimestampFromFuture {
        /// The product.
        product: String,
        /// When it says it was issued.
        issued: u64,
        /// The device's clock.
        now: u64,
    },
    /// An older timestamp than one already accepted.
    #[error(
        "the timestamp of {product} is number {offered}, older than number {seen} this device already accepted: \
         someone is replaying old metadata; refused"
    )]
    TimestampRollback {
        /// The product.
        product: String,
        /// The newest one accepted.
        seen: u64,
        /// The one offered.
        offered: u64,
    },
    /// Offered an older release than the newest the vendor signed for.
    #[error(
        "offered release {offered}, but the vendor's timestamp names {newest} as the newest for hardware \
         {hardware}: the newer release is being withheld (a freeze attack, or a stale SPN); refused"
    )]
    Frozen {
        /// The device's hardware.
        hardware: String,
        /// The version offered.
        offered: String,
        /// The newest the timestamp names.
        newest: String,
    },
    /// Offered, as the newest, a release the vendor's timestamp does not name.
    #[error(
        "offered release {offered} as the newest for hardware {hardware}, but the vendor's timestamp names \
         {newest}: a release its online key has not announced (not yet, or not signed by the vendor at all); refused"
    )]
    Unannounced {
        /// The device's hardware.
        hardware: String,
        /// The version offered.
        offered: String,
        /// What the timestamp names.
        newest: String,
    },
    /// The device's product is not known: nothing is installed yet, and none was named.
    #[error(
        "this device's product is not known (nothing is installed yet): name it; releases for other products are refused"
    )]
    NoProduct,
    /// The image, or the SPN's account of it, changed during a publish.
    #[error("{0}; nothing signed")]
    Changed(String),
    /// A bundle was refused; where it came from.
    #[error("{from}: {source}")]
    Bundle {
        /// The bundle file, or the release at the SPN.
        from: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The image fetched does not match the release.
    #[error("image does not match the release: {0}; nothing installed")]
    ImageMismatch(String),
    /// Decoding failed (shards lost beyond repair, bad manifest...).
    #[error(transparent)]
    Chunker(#[from] chunker::Error),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// The fetch failed (files, peers, or a manifest that is not the release's).
    #[error(transparent)]
    Fetch(#[from] client::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn from_bundle(from: String, e: Error) -> Self {
        Error::Bundle { from, source: Box::new(e) }
    }

    /// The error itself, or the one a bundle was refused for.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Bundle { source, .. } => source.cause(),
            e => e,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
