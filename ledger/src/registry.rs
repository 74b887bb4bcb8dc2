//! What the chain records beyond stake and anchors: the manufacturer and
//! device registry, content authorizations, deletion attestations,
//! release records and contribution points. Each kind has its rules
//! ([`check`], against the state before the block), its conflicts within
//! one block ([`exclusive`]) and its effect ([`apply`]); readers get typed
//! records ([`Record`]).
//!
//! Tables: `config` (`admins`, `threshold`, from the genesis),
//! `makers` (manufacturer → maker record), `approvals` (manufacturer |
//! admit | admin → height), `devices` (device → device record), `auths`
//! (owner | object | receiver → height), `deletions` (owner | object →
//! deletion record), `releases` (product | version | signer → tx id),
//! `points` (peer | awarder → byte-hours | audits), `credited` (awarder |
//! root | peer → height). Keys of variable parts are length-prefixed.

use libp2p_identity::PeerId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result, TxError};
use crate::genesis::Genesis;
use crate::tx::{Body, Change, Tx, TxId};

pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
pub(crate) const MAKERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("makers");
pub(crate) const APPROVALS: TableDefinition<&[u8], u64> = TableDefinition::new("approvals");
pub(crate) const DEVICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("devices");
pub(crate) const AUTHS: TableDefinition<&[u8], u64> = TableDefinition::new("auths");
pub(crate) const DELETIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deletions");
pub(crate) const RELEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("releases");
pub(crate) const POINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("points");
pub(crate) const CREDITED: TableDefinition<&[u8], u64> = TableDefinition::new("credited");

/// A key of length-prefixed parts.
fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    for p in parts {
        w.bytes(p);
    }
    w.finish()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An admitted manufacturer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maker {
    /// Its key.
    pub manufacturer: String,
    /// Its name.
    pub name: String,
    /// The height it was admitted at.
    pub admitted: u64,
}

/// A registered device and where its life stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its peer id.
    pub device: String,
    /// The manufacturer that registered it.
    pub manufacturer: String,
    /// Its product.
    pub product: String,
    /// Its hardware revision.
    pub hardware: String,
    /// `active`, `transferred` or `retired`.
    pub status: String,
    /// Its owner after a transfer (empty before).
    pub owner: String,
    /// The height it was registered at, and the registration's transaction.
    pub registered: u64,
    /// The registration's transaction id (hex).
    pub registration: String,
    /// The height of its last change (its registration if none).
    pub changed: u64,
    /// The last change's transaction id (hex).
    pub last_tx: String,
}

/// An owner's attestation that an object is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// The owner.
    pub owner: String,
    /// The object's CID.
    pub object: String,
    /// The Merkle root of the peers' delete acknowledgements (hex).
    pub acks_root: String,
    /// How many acknowledgements.
    pub acks: u64,
    /// The height it was recorded at.
    pub height: u64,
    /// The transaction (hex).
    pub tx: String,
}

/// A peer's contribution points, in all and by who attested them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// The peer.
    pub peer: String,
    /// Stored byte-hours, in all.
    pub byte_hours: u64,
    /// Audits passed, in all.
    pub audits: u64,
    /// Per attester (whoever anchored the batches): byte-hours and audits.
    pub by: Vec<(String, u64, u64)>,
}

/// A release record on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Who signed it (a vendor key).
    pub signer: String,
    /// Its transaction (hex): `ledger prove tx` proves it.
    pub tx: String,
}

/// What a reader may look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A manufacturer.
    Maker(PeerId),
    /// A device.
    Device(PeerId),
    /// Whether `owner` authorizes `receiver` for `object` (since which height).
    Authorized {
        /// The owner.
        owner: PeerId,
        /// The object's CID.
        object: String,
        /// The receiver.
        receiver: PeerId,
    },
    /// An owner's deletion attestation of an object.
    Deletion {
        /// The owner.
        owner: PeerId,
        /// The object's CID.
        object: String,
    },
    /// A peer's points.
    Points(PeerId),
    /// The records of a release: by `signer`, or by every signer (at
    /// most [`MAX_LISTED`]).
    Release {
        /// The product.
        product: String,
        /// The version.
        version: String,
        /// Only this signer's record.
        signer: Option<PeerId>,
    },
}

/// The words a points transaction is refused with when a peer in it was
/// credited from that batch already (for good: the SPN settles it).
pub const ALREADY_CREDITED: &str = "was credited from that batch already";

/// Entries a lookup lists at most (a release's signers, a peer's
/// attesters): anyone may add to them, so a reader's answer stays bounded.
pub const MAX_LISTED: usize = 100;

/// A looked-up record (`None` fields: not on the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A manufacturer, if admitted.
    Maker(Option<Maker>),
    /// A device, if registered.
    Device(Option<Device>),
    /// The height an authorization was granted at, if it stands.
    Authorized(Option<u64>),
    /// A deletion attestation, if recorded.
    Deletion(Option<Deletion>),
    /// A peer's points.
    Points(Points),
    /// A release's records.
    Releases(Vec<Release>),
}

const TEXT: usize = 128;

impl Lookup {
    /// Its bytes (inside a [`crate::Question`]).
    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Lookup::Maker(p) => w.u8(1).bytes(&p.to_bytes()),
            Lookup::Device(p) => w.u8(2).bytes(&p.to_bytes()),
            Lookup::Authorized { owner, object, receiver } => {
                w.u8(3).bytes(&owner.to_bytes()).bytes(object.as_bytes()).bytes(&receiver.to_bytes())
            }
            Lookup::Deletion { owner, object } => w.u8(4).bytes(&owner.to_bytes()).bytes(object.as_bytes()),
            Lookup::Points(p) => w.u8(5).bytes(&p.to_bytes()),
            Lookup::Release { product, version, signer } => {
                w.u8(6).bytes(product.as_bytes()).bytes(version.as_bytes());
                match signer {
                    Some(p) => w.u8(1).bytes(&p.to_bytes()),
                    None => w.u8(0),
                }
            }
        };
    }

    /// Parse one from untrusted bytes.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Lookup> {
        let peer = |r: &mut Reader<'_>| -> Result<PeerId> {
            PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("peer: {e}")))
        };
        let text = |r: &mut Reader<'_>| -> Result<String> {
            String::from_utf8(r.bytes(TEXT)?.to_vec()).map_err(|_| r.malformed("text that is not UTF-8"))
        };
        Ok(match r.u8()? {
            1 => Lookup::Maker(peer(r)?),
            2 => Lookup::Device(peer(r)?),
            3 => Lookup::Authorized { owner: peer(r)?, object: text(r)?, receiver: peer(r)? },
            4 => Lookup::Deletion { owner: peer(r)?, object: text(r)? },
            5 => Lookup::Points(peer(r)?),
            6 => {
                let (product, version) = (text(r)?, text(r)?);
                let signer = match r.u8()? {
                    0 => None,
                    1 => Some(peer(r)?),
                    f => return Err(r.malformed(format!("flag {f}: 0 or 1"))),
                };
                Lookup::Release { product, version, signer }
            }
            k => return Err(r.malformed(format!("lookup kind {k}"))),
        })
    }
}

/// Write the registry's admins and threshold from `genesis` (a new store).
pub(crate) fn seed(txn: &WriteTransaction, genesis: &Genesis) -> Result<()> {
    let mut config = txn.open_table(CONFIG)?;
    let admins = genesis.admin_ids()?;
    config.insert("admins", crate::state::encode_peers(&admins).as_slice())?;
    config.insert("threshold", u64::from(genesis.admin_threshold).to_be_bytes().as_slice())?;
    for t in [MAKERS, DEVICES, DELETIONS, RELEASES, POINTS] {
        txn.open_table(t)?;
    }
    txn.open_table(APPROVALS)?;
    txn.open_table(AUTHS)?;
    txn.open_table(CREDITED)?;
    Ok(())
}

/// The keys a transaction holds for itself within one block: two
/// transactions with a key in common cannot share a block (the first wins
/// the pool; the second waits or fails its check next time).
pub(crate) fn exclusive(tx: &Tx) -> Vec<[u8; 32]> {
    let k = |parts: &[&[u8]]| *blake3::hash(&key(parts)).as_bytes();
    let s = tx.signer.to_bytes();
    match &tx.body {
        Body::Anchor { root, .. } => vec![k(&[b"anchor", &s, root])],
        Body::Evidence { first, second } => {
            crate::state::offence(first, second).map(|(_, _, key)| vec![key]).unwrap_or_default()
        }
        Body::Admit { manufacturer, .. } => vec![k(&[b"admit", &manufacturer.to_bytes()])],
        // A registration also holds its manufacturer's admission: a
        // removal reaching the threshold cannot share its block.
        Body::Register { device, .. } => vec![k(&[b"device", &device.to_bytes()]), k(&[b"admit", &s])],
        Body::Lifecycle { device, .. } => vec![k(&[b"device", &device.to_bytes()])],
        Body::Authorize { object, receiver, .. } => vec![k(&[b"auth", &s, object.as_bytes(), &receiver.to_bytes()])],
        Body::Deletion { object, .. } => vec![k(&[b"deletion", &s, object.as_bytes()])],
        Body::Release { product, version, .. } => vec![k(&[b"release", product.as_bytes(), version.as_bytes(), &s])],
        Body::Points { root, credits } => {
            credits.iter().map(|c| k(&[b"points", &s, root, &c.peer.to_bytes()])).collect()
        }
        // One checkpoint per snapshot height.
        Body::Checkpoint { height, .. } => vec![k(&[b"checkpoint", &height.to_be_bytes()])],
        Body::Vote { .. } | Body::Candidate { .. } => Vec::new(),
    }
}

/// A read view over the registry's tables (a read or a write transaction's).
pub(crate) trait View {
    fn get(&self, table: TableDefinition<&[u8], &[u8]>, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn get_u64(&self, table: TableDefinition<&[u8], u64>, key: &[u8]) -> Result<Option<u64>>;
    fn config(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Entries of `table` whose key starts with `prefix`, at most `max`.
    fn scan(&self, table: TableDefinition<&[u8], &[u8]>, prefix: &[u8], max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn count_u64(&self, table: TableDefinition<&[u8], u64>, prefix: &[u8]) -> Result<u64>;
}

impl View for redb::ReadTransaction {
    fn get(&self, table: TableDefinition<&[u8], &[u8]>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.open_table(table) {
            Ok(t) => Ok(t.get(key)?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn get_u64(&self, table: TableDefinition<&[u8], u64>, key: &[u8]) -> Result<Option<u64>> {
        match self.open_table(table) {
            Ok(t) => Ok(t.get(key)?.map(|v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn config(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.open_table(CONFIG) {
            Ok(t) => Ok(t.get(name)?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    fn scan(&self, table: TableDefinition<&[u8], &[u8]>, prefix: &[u8], max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.open_table(table) {
            Ok(t) => scan_table(&t, prefix, max),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
    fn count_u64(&self, table: TableDefinition<&[u8], u64>, prefix: &[u8]) -> Result<u64> {
        match self.open_table(table) {
            Ok(t) => count_table(&t, prefix),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

impl View for WriteTransaction {
    fn get(&self, table: TableDefinition<&[u8], &[u8]>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.open_table(table)?.get(key)?.map(|v| v.value().to_vec()))
    }
    fn get_u64(&self, table: TableDefinition<&[u8], u64>, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.open_table(table)?.get(key)?.map(|v| v.value()))
    }
    fn config(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.open_table(CONFIG)?.get(name)?.map(|v| v.value().to_vec()))
    }
    fn scan(&self, table: TableDefinition<&[u8], &[u8]>, prefix: &[u8], max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        scan_table(&self.open_table(table)?, prefix, max)
    }
    fn count_u64(&self, table: TableDefinition<&[u8], u64>, prefix: &[u8]) -> Result<u64> {
        count_table(&self.open_table(table)?, prefix)
    }
}

/// Entries of `t` whose key starts with `prefix`, at most `max`.
fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
    max: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in t.range(prefix..)? {
        let (k, v) = e?;
        if !k.value().starts_with(prefix) || out.len() >= max {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// How many keys of `t` start with `prefix`.
fn count_table<T: ReadableTable<&'static [u8], u64>>(t: &T, prefix: &[u8]) -> Result<u64> {
    let mut n = 0;
    for e in t.range(prefix..)? {
        if !e?.0.value().starts_with(prefix) {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// The registry's admins and how many must agree.
fn admins(v: &dyn View) -> Result<(Vec<PeerId>, u64)> {
    let list = v.config("admins")?.map(|b| crate::state::decode_peers(&b)).transpose()?.unwrap_or_default();
    let threshold = v.config("threshold")?.and_then(|b| b.try_into().ok()).map_or(1, u64::from_be_bytes);
    Ok((list, threshold))
}

fn approval_prefix(manufacturer: &PeerId, admit: bool) -> Vec<u8> {
    key(&[&manufacturer.to_bytes(), &[u8::from(admit)]])
}

fn encode_maker(m: &Maker) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(m.name.as_bytes()).u64(m.admitted);
    w.finish()
}

fn decode_maker(id: &PeerId, b: &[u8]) -> Result<Maker> {
    let mut r = Reader::new(b, "maker record");
    let name = String::from_utf8_lossy(r.bytes(TEXT)?).into_owned();
    let admitted = r.u64()?;
    Ok(Maker { manufacturer: id.to_string(), name, admitted })
}

fn encode_device(d: &Device) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(d.manufacturer.as_bytes())
        .bytes(d.product.as_bytes())
        .bytes(d.hardware.as_bytes())
        .bytes(d.status.as_bytes())
        .bytes(d.owner.as_bytes())
        .u64(d.registered)
        .bytes(d.registration.as_bytes())
        .u64(d.changed)
        .bytes(d.last_tx.as_bytes());
    w.finish()
}

fn decode_device(id: &PeerId, b: &[u8]) -> Result<Device> {
    let mut r = Reader::new(b, "device record");
    let s = |r: &mut Reader<'_>| -> Result<String> { Ok(String::from_utf8_lossy(r.bytes(TEXT)?).into_owned()) };
    Ok(Device {
        device: id.to_string(),
        manufacturer: s(&mut r)?,
        product: s(&mut r)?,
        hardware: s(&mut r)?,
        status: s(&mut r)?,
        owner: s(&mut r)?,
        registered: r.u64()?,
        registration: s(&mut r)?,
        changed: r.u64()?,
        last_tx: s(&mut r)?,
    })
}

fn maker(v: &dyn View, id: &PeerId) -> Result<Option<Maker>> {
    v.get(MAKERS, &id.to_bytes())?.map(|b| decode_maker(id, &b)).transpose()
}

fn device(v: &dyn View, id: &PeerId) -> Result<Option<Device>> {
    v.get(DEVICES, &id.to_bytes())?.map(|b| decode_device(id, &b)).transpose()
}

/// Check `tx`'s registry rules against the state before its block.
pub(crate) fn check(v: &dyn View, tx: &Tx) -> Result<()> {
    let invalid = |why: String| Err(Error::Tx(TxError::Invalid(why)));
    let signer = &tx.signer;
    match &tx.body {
        Body::Admit { manufacturer, admit, .. } => {
            let (list, _) = admins(v)?;
            if !list.contains(signer) {
                return Err(TxError::NotAdmin(signer.to_string()).into());
            }
            if maker(v, manufacturer)?.is_some() == *admit {
                return invalid(format!(
                    "{manufacturer} is {} already",
                    if *admit { "admitted" } else { "not admitted" }
                ));
            }
            let mut k = approval_prefix(manufacturer, *admit);
            k.extend_from_slice(&key(&[&signer.to_bytes()]));
            if v.get_u64(APPROVALS, &k)?.is_some() {
                return invalid(format!("{signer} approved that already; other admins must agree"));
            }
        }
        Body::Register { device: d, .. } => {
            if maker(v, signer)?.is_none() {
                return Err(TxError::NotManufacturer(signer.to_string()).into());
            }
            if let Some(had) = device(v, d)? {
                return Err(TxError::AlreadyRegistered { device: d.to_string(), by: had.manufacturer }.into());
            }
        }
        Body::Lifecycle { device: d, change } => {
            let Some(had) = device(v, d)? else {
                return invalid(format!("{d} is not a registered device"));
            };
            if had.status == "retired" {
                return invalid(format!("{d} is retired: its record changes no more"));
            }
            let me = signer.to_string();
            if had.manufacturer != me && had.owner != me {
                return Err(TxError::NotYours { device: d.to_string(), signer: me }.into());
            }
            if let Change::Transfer(to) = change
                && had.owner == to.to_string()
            {
                return invalid(format!("{d} belongs to {to} already"));
            }
        }
        Body::Authorize { object, receiver, grant } => {
            let k = key(&[&signer.to_bytes(), object.as_bytes(), &receiver.to_bytes()]);
            if v.get_u64(AUTHS, &k)?.is_some() == *grant {
                return invalid(format!(
                    "{receiver} is {} for {object} already",
                    if *grant { "authorized" } else { "not authorized" }
                ));
            }
        }
        Body::Deletion { object, .. } => {
            if v.get(DELETIONS, &key(&[&signer.to_bytes(), object.as_bytes()]))?.is_some() {
                return invalid(format!("{signer} attested the deletion of {object} already"));
            }
        }
        Body::Release { product, version, .. } => {
            if v.get(RELEASES, &key(&[product.as_bytes(), version.as_bytes(), &signer.to_bytes()]))?.is_some() {
                return invalid(format!("{signer} recorded {product} {version} already: a version is recorded once"));
            }
        }
        Body::Points { root, credits } => {
            let mut ak = signer.to_bytes();
            ak.extend_from_slice(root);
            if v.get(crate::store::ANCHORS, &ak)?.is_none() {
                return invalid(format!(
                    "{signer} anchored no batch with root {}: points come from anchored batches",
                    hex(root)
                ));
            }
            for c in credits {
                if v.get_u64(CREDITED, &key(&[&signer.to_bytes(), root, &c.peer.to_bytes()]))?.is_some() {
                    return invalid(format!("{} {ALREADY_CREDITED}", c.peer));
                }
            }
        }
        Body::Anchor { .. }
        | Body::Vote { .. }
        | Body::Candidate { .. }
        | Body::Evidence { .. }
        | Body::Checkpoint { .. } => {}
    }
    Ok(())
}

/// Apply `tx`'s registry effect at `height`. A transaction whose rule no
/// longer holds (an earlier one in the block got there first) has none.
pub(crate) fn apply(txn: &WriteTransaction, height: u64, tx: &Tx) -> Result<()> {
    if !matches!(
        tx.body,
        Body::Admit { .. }
            | Body::Register { .. }
            | Body::Lifecycle { .. }
            | Body::Authorize { .. }
            | Body::Deletion { .. }
            | Body::Release { .. }
            | Body::Points { .. }
    ) {
        return Ok(());
    }
    match check(txn, tx) {
        Ok(()) => {}
        // Its rule no longer holds: no effect (the block's checks make this rare).
        Err(Error::Tx(_)) => return Ok(()),
        // A failing store must stop the commit, not skip a transaction.
        Err(e) => return Err(e),
    }
    let signer = tx.signer.to_bytes();
    let id = tx.id().to_string();
    match &tx.body {
        Body::Admit { manufacturer, name, admit } => {
            let prefix = approval_prefix(manufacturer, *admit);
            let mut k = prefix.clone();
            k.extend_from_slice(&key(&[&signer]));
            txn.open_table(APPROVALS)?.insert(k.as_slice(), height)?;
            let (_, threshold) = admins(txn)?;
            if txn.count_u64(APPROVALS, &prefix)? >= threshold {
                let m = manufacturer.to_bytes();
                if *admit {
                    let rec = Maker { manufacturer: manufacturer.to_string(), name: name.clone(), admitted: height };
                    txn.open_table(MAKERS)?.insert(m.as_slice(), encode_maker(&rec).as_slice())?;
                } else {
                    txn.open_table(MAKERS)?.remove(m.as_slice())?;
                }
                // Approvals either way start over.
                let mut t = txn.open_table(APPROVALS)?;
                for flag in [true, false] {
                    let p = approval_prefix(manufacturer, flag);
                    let mut keys = Vec::new();
                    for e in t.range(p.as_slice()..)? {
                        let k = e?.0.value().to_vec();
                        if !k.starts_with(&p) {
                            break;
                        }
                        keys.push(k);
                    }
                    for k in keys {
                        t.remove(k.as_slice())?;
                    }
                }
            }
        }
        Body::Register { device, product, hardware } => {
            let rec = Device {
                device: device.to_string(),
                manufacturer: tx.signer.to_string(),
                product: product.clone(),
                hardware: hardware.clone(),
                status: "active".into(),
                owner: String::new(),
                registered: height,
                registration: id.clone(),
                changed: height,
                last_tx: id,
            };
            txn.open_table(DEVICES)?.insert(device.to_bytes().as_slice(), encode_device(&rec).as_slice())?;
        }
        Body::Lifecycle { device: d, change } => {
            if let Some(mut rec) = device(txn, d)? {
                match change {
                    Change::Transfer(to) => {
                        rec.status = "transferred".into();
                        rec.owner = to.to_string();
                    }
                    Change::Retire => rec.status = "retired".into(),
                }
                rec.changed = height;
                rec.last_tx = id;
                txn.open_table(DEVICES)?.insert(d.to_bytes().as_slice(), encode_device(&rec).as_slice())?;
            }
        }
        Body::Authorize { object, receiver, grant } => {
            let k = key(&[&signer, object.as_bytes(), &receiver.to_bytes()]);
            let mut t = txn.open_table(AUTHS)?;
            if *grant {
                t.insert(k.as_slice(), height)?;
            } else {
                t.remove(k.as_slice())?;
            }
        }
        Body::Deletion { object, acks_root, acks } => {
            let mut w = Writer::new();
            w.raw(acks_root).u64(*acks).u64(height).raw(&tx.id().0);
            txn.open_table(DELETIONS)?.insert(key(&[&signer, object.as_bytes()]).as_slice(), w.finish().as_slice())?;
        }
        Body::Release { product, version, .. } => {
            let k = key(&[product.as_bytes(), version.as_bytes(), &signer]);
            txn.open_table(RELEASES)?.insert(k.as_slice(), tx.id().0.as_slice())?;
        }
        Body::Points { root, credits } => {
            let mut points = txn.open_table(POINTS)?;
            let mut credited = txn.open_table(CREDITED)?;
            for c in credits {
                let pk = key(&[&c.peer.to_bytes(), &signer]);
                let (bh, au) = match points.get(pk.as_slice())? {
                    Some(v) => decode_points(v.value())?,
                    None => (0, 0),
                };
                let mut w = Writer::new();
                w.u64(bh.saturating_add(c.byte_hours)).u64(au.saturating_add(u64::from(c.audits)));
                points.insert(pk.as_slice(), w.finish().as_slice())?;
                credited.insert(key(&[&signer, root, &c.peer.to_bytes()]).as_slice(), height)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_points(b: &[u8]) -> Result<(u64, u64)> {
    let mut r = Reader::new(b, "points");
    Ok((r.u64()?, r.u64()?))
}

/// Look `what` up in the state.
pub(crate) fn lookup(v: &dyn View, what: &Lookup) -> Result<Record> {
    Ok(match what {
        Lookup::Maker(id) => Record::Maker(maker(v, id)?),
        Lookup::Device(id) => Record::Device(device(v, id)?),
        Lookup::Authorized { owner, object, receiver } => {
            Record::Authorized(v.get_u64(AUTHS, &key(&[&owner.to_bytes(), object.as_bytes(), &receiver.to_bytes()]))?)
        }
        Lookup::Deletion { owner, object } => {
            let rec = v.get(DELETIONS, &key(&[&owner.to_bytes(), object.as_bytes()]))?;
            Record::Deletion(
                rec.map(|b| -> Result<Deletion> {
                    let mut r = Reader::new(&b, "deletion record");
                    let root: [u8; 32] = r.array()?;
                    let (acks, height) = (r.u64()?, r.u64()?);
                    let tx: [u8; 32] = r.array()?;
                    Ok(Deletion {
                        owner: owner.to_string(),
                        object: object.clone(),
                        acks_root: hex(&root),
                        acks,
                        height,
                        tx: hex(&tx),
                    })
                })
                .transpose()?,
            )
        }
        Lookup::Points(peer) => {
            let mut p = Points { peer: peer.to_string(), ..Points::default() };
            for (k, val) in v.scan(POINTS, &key(&[&peer.to_bytes()]), usize::MAX)? {
                let mut r = Reader::new(&k, "points key");
                let _ = r.bytes(64)?;
                let by = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(e.to_string()))?;
                let (bh, au) = decode_points(&val)?;
                p.byte_hours = p.byte_hours.saturating_add(bh);
                p.audits = p.audits.saturating_add(au);
                if p.by.len() < MAX_LISTED {
                    p.by.push((by.to_string(), bh, au));
                }
            }
            Record::Points(p)
        }
        Lookup::Release { product, version, signer: Some(signer) } => {
            let k = key(&[product.as_bytes(), version.as_bytes(), &signer.to_bytes()]);
            Record::Releases(
                v.get(RELEASES, &k)?
                    .map(|val| Release { signer: signer.to_string(), tx: hex(&val) })
                    .into_iter()
                    .collect(),
            )
        }
        Lookup::Release { product, version, signer: None } => {
            let mut out = Vec::new();
            for (k, val) in v.scan(RELEASES, &key(&[product.as_bytes(), version.as_bytes()]), MAX_LISTED)? {
                let mut r = Reader::new(&k, "release key");
                let _ = (r.bytes(TEXT)?, r.bytes(TEXT)?);
                let signer = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(e.to_string()))?;
                out.push(Release { signer: signer.to_string(), tx: hex(&val) });
            }
            Record::Releases(out)
        }
    })
}

/// A transaction id from its hex form.
pub fn tx_id(hex_id: &str) -> Option<TxId> {
    crate::block::Hash::from_hex(hex_id).map(|h| TxId(h.0))
}
