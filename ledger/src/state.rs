//! The chain's state beside its blocks: stake, candidates, votes, jailed
//! producers, recorded evidence and the producer set of every height, as
//! the blocks make them (DPoS after the whitepapers' IPOS). Applied in the
//! transaction that commits each block, so the state and the blocks never
//! disagree after a crash.
//!
//! Elections: at every maintenance boundary (a height divisible by
//! `maintenance`), each candidate's score is the stake of the accounts
//! whose current vote approves it; the top `producers` (jailed ones left
//! out; ties by peer id) form the set from `boundary + delay` on. Elected
//! producers have equal voting power in consensus, as in DPoS: stake
//! elects, it does not weigh votes. The genesis producers are candidates
//! from the start and their stake approves the genesis set, so an election
//! without other votes keeps it.
//!
//! Tables: `accounts` (peer → stake), `candidates` (peer → address),
//! `votes` (voter → list of peers), `jailed` (peer → height), `evidence`
//! (offence key → height), `sets` (first height → list of peers),
//! `recoveries` (first height → the signed recovery that set it).

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::block::{Block, Hash};
use crate::codec::{Reader, Writer};
use crate::ctx::Vote;
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::tx::Body;

pub(crate) const ACCOUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("accounts");
pub(crate) const CANDIDATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("candidates");
pub(crate) const VOTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("votes");
pub(crate) const JAILED: TableDefinition<&[u8], u64> = TableDefinition::new("jailed");
pub(crate) const EVIDENCE: TableDefinition<&[u8], u64> = TableDefinition::new("evidence");
pub(crate) const SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("sets");
pub(crate) const RECOVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("recoveries");

/// A list of peers' bytes (a vote's candidates, a set).
pub(crate) fn encode_peers(peers: &[PeerId]) -> Vec<u8> {
    let mut w = Writer::new();
    w.count(peers.len());
    for p in peers {
        w.bytes(&p.to_bytes());
    }
    w.finish()
}

pub(crate) fn decode_peers(bytes: &[u8]) -> Result<Vec<PeerId>> {
    let mut r = Reader::new(bytes, "list of peers");
    let n = r.count(1024)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("peer: {e}")))?);
    }
    r.end()?;
    Ok(out)
}

/// The hash naming a producer set (what a header's `next_set` holds).
pub fn set_hash(peers: &[PeerId]) -> Hash {
    let mut sorted = peers.to_vec();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"ionshard ledger producer set v1");
    h.update(&encode_peers(&sorted));
    Hash(*h.finalize().as_bytes())
}

/// The two votes of a piece of evidence, and the key its offence is recorded under.
pub(crate) fn offence(first: &[u8], second: &[u8]) -> Result<(Vote, Vote, [u8; 32])> {
    let vote = |b: &[u8]| match crate::wire::Message::decode(b)? {
        crate::wire::Message::Vote(v) => Ok(v),
        _ => Err(Error::Malformed { what: "evidence", why: "not a vote".into() }),
    };
    let (a, b) = (vote(first)?, vote(second)?);
    let m = &a.message;
    let mut w = Writer::new();
    w.bytes(&m.validator.0.to_bytes()).u64(m.height.0).i64(m.round.as_i64());
    w.u8(u8::from(m.kind == malachite_types::VoteType::Precommit));
    let key = *blake3::hash(&w.finish()).as_bytes();
    Ok((a.message.clone(), b.message.clone(), key))
}

/// Seed the state from `genesis` if it is empty (a new store).
pub(crate) fn seed(txn: &WriteTransaction, genesis: &Genesis) -> Result<()> {
    let mut sets = txn.open_table(SETS)?;
    if sets.first()?.is_some() {
        return Ok(());
    }
    let producers: Vec<PeerId> = genesis.producers.iter().filter_map(|p| p.peer.parse().ok()).collect();
    sets.insert(1, encode_peers(&producers).as_slice())?;
    let mut accounts = txn.open_table(ACCOUNTS)?;
    for (peer, stake) in genesis.stakes() {
        let have = accounts.get(peer.to_bytes().as_slice())?.map(|v| v.value()).unwrap_or(0);
        accounts.insert(peer.to_bytes().as_slice(), have.saturating_add(stake))?;
    }
    let mut candidates = txn.open_table(CANDIDATES)?;
    let mut votes = txn.open_table(VOTES)?;
    for p in &genesis.producers {
        if let Ok(id) = p.peer.parse::<PeerId>() {
            candidates.insert(id.to_bytes().as_slice(), p.addr.as_bytes())?;
            votes.insert(id.to_bytes().as_slice(), encode_peers(&producers).as_slice())?;
        }
    }
    txn.open_table(JAILED)?;
    txn.open_table(EVIDENCE)?;
    crate::registry::seed(txn, genesis)
}

/// Apply `block`'s transactions and, at a boundary, the election.
pub(crate) fn apply(txn: &WriteTransaction, block: &Block, genesis: &Genesis) -> Result<()> {
    let p = &genesis.params;
    {
        let mut votes = txn.open_table(VOTES)?;
        let mut candidates = txn.open_table(CANDIDATES)?;
        let mut jailed = txn.open_table(JAILED)?;
        let mut evidence = txn.open_table(EVIDENCE)?;
        let mut accounts = txn.open_table(ACCOUNTS)?;
        for tx in &block.txs {
            let signer = tx.signer.to_bytes();
            match &tx.body {
                Body::Vote { candidates: list } if list.is_empty() => {
                    votes.remove(signer.as_slice())?;
                }
                Body::Vote { candidates: list } => {
                    votes.insert(signer.as_slice(), encode_peers(list).as_slice())?;
                }
                Body::Candidate { addr } => {
                    candidates.insert(signer.as_slice(), addr.as_bytes())?;
                }
                Body::Evidence { first, second } => {
                    let (a, _, key) = offence(first, second)?;
                    let offender = a.validator.0.to_bytes();
                    evidence.insert(key.as_slice(), block.height)?;
                    jailed.insert(offender.as_slice(), block.height)?;
                    let stake = accounts.get(offender.as_slice())?.map(|v| v.value()).unwrap_or(0);
                    let burned = stake / 100 * u64::from(p.slash_pct) + stake % 100 * u64::from(p.slash_pct) / 100;
                    accounts.insert(offender.as_slice(), stake - burned.min(stake))?;
                }
                Body::Anchor { .. } => {}
                _ => {}
            }
        }
    }
    for tx in &block.txs {
        crate::registry::apply(txn, block.height, tx)?;
    }
    if block.height.is_multiple_of(p.maintenance) {
        let elected = elect(txn, p.producers as usize)?;
        let mut sets = txn.open_table(SETS)?;
        let from = block.height + p.delay;
        let current = sets.range(..=from)?.next_back().transpose()?.map(|(_, v)| v.value().to_vec());
        let current = current.map(|c| decode_peers(&c)).transpose()?.unwrap_or_default();
        let mut a = current.clone();
        let mut b = elected.clone();
        a.sort();
        b.sort();
        if !elected.is_empty() && a != b {
            sets.insert(from, encode_peers(&elected).as_slice())?;
        }
    }
    Ok(())
}

/// The election: the top `n` candidates by approving stake, jailed ones out.
fn elect(txn: &WriteTransaction, n: usize) -> Result<Vec<PeerId>> {
    let votes = txn.open_table(VOTES)?;
    let candidates = txn.open_table(CANDIDATES)?;
    let jailed = txn.open_table(JAILED)?;
    let accounts = txn.open_table(ACCOUNTS)?;
    let mut score: BTreeMap<PeerId, u128> = BTreeMap::new();
    for e in votes.iter()? {
        let (voter, list) = e?;
        let weight = accounts.get(voter.value())?.map(|v| v.value()).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        for c in decode_peers(list.value())? {
            let key = c.to_bytes();
            if candidates.get(key.as_slice())?.is_some() && jailed.get(key.as_slice())?.is_none() {
                *score.entry(c).or_default() += u128::from(weight);
            }
        }
    }
    let mut ranked: Vec<(PeerId, u128)> = score.into_iter().filter(|(_, s)| *s > 0).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(ranked.into_iter().take(n).map(|(p, _)| p).collect())
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;
    use malachite_types::{CommitCertificate, NilOrVal, Round, SignedVote, VoteType};

    use super::*;
    use crate::ctx::{Address, Height, Signature};
    use crate::genesis::{Account, Params, Producer};
    use crate::store::Store;
    use crate::tx::{Change, Tx};

    struct World {
        genesis: Genesis,
        producers: Vec<Keypair>,
        voter: Keypair,
        newcomer: Keypair,
        admins: Vec<Keypair>,
    }

    fn world() -> World {
        let producers: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
        let voter = Keypair::generate_ed25519();
        let newcomer = Keypair::generate_ed25519();
        let admins: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
        let genesis = Genesis {
            version: crate::GENESIS_VERSION,
            name: "t".into(),
            time_ms: 0,
            producers: producers
                .iter()
                .map(|k| {
                    let id = k.public().to_peer_id();
                    Producer { peer: id.to_string(), addr: format!("/ip4/127.0.0.1/tcp/1/p2p/{id}"), stake: 1000 }
                })
                .collect(),
            params: Params { producers: 4, maintenance: 5, delay: 2, ..Params::default() },
            accounts: vec![Account { peer: voter.public().to_peer_id().to_string(), stake: 10_000 }],
            admins: admins.iter().map(|k| k.public().to_peer_id().to_string()).collect(),
            admin_threshold: 2,
        };
        World { genesis, producers, voter, newcomer, admins }
    }

    /// A store seeded with the world's genesis, the producers' ids and the newcomer's.
    fn opened(w: &World) -> (tempfile::TempDir, Store, Vec<PeerId>, PeerId) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), w.genesis.hash()).expect("store");
        store.seed(&w.genesis).expect("seed");
        let ids = w.producers.iter().map(|k| k.public().to_peer_id()).collect();
        (dir, store, ids, w.newcomer.public().to_peer_id())
    }

    /// Commit `n` blocks, block `at` holding `txs`.
    fn run(store: &Store, g: &Genesis, from: u64, to: u64, at: u64, txs: Vec<Tx>) {
        let key = Keypair::generate_ed25519();
        for h in from..=to {
            let parent = store.hash_at(h - 1).expect("read").unwrap_or(g.hash());
            let b = Block {
                chain: g.hash(),
                height: h,
                parent,
                time_ms: h,
                proposer: key.public().to_peer_id(),
                next_set: set_hash(&store.set_at(h + 1).expect("set")),
                txs: if h == at { txs.clone() } else { Vec::new() },
            };
            let c = CommitCertificate {
                height: Height(h),
                round: Round::new(0),
                value_id: b.hash(),
                commit_signatures: vec![],
            };
            store.commit(&b, &c, &[], g).expect("commit");
        }
    }

    fn vote(k: &Keypair, chain: Hash, epoch: Hash, value: u8) -> Vec<u8> {
        let v = Vote {
            kind: VoteType::Prevote,
            height: Height(3),
            round: Round::new(0),
            value: NilOrVal::Val(Hash([value; 32])),
            validator: Address(k.public().to_peer_id()),
        };
        let sig = Signature(k.sign(&v.signed_bytes(chain, epoch)).expect("sign"));
        crate::wire::Message::Vote(SignedVote::new(v, sig)).encode()
    }

    #[test]
    fn a_vote_changes_the_set_at_the_next_boundary_and_an_equivocator_is_voted_out_and_slashed() {
        let w = world();
        let g = &w.genesis;
        let chain = g.hash();
        let (_dir, store, ids, newcomer) = opened(&w);
        assert_eq!(store.set_at(1).expect("set").len(), 4);

        // The newcomer stands; the voter's stake approves it and three producers.
        let stand = Body::Candidate { addr: format!("/ip4/127.0.0.1/tcp/2/p2p/{newcomer}") };
        let ballot = Body::Vote { candidates: vec![ids[0], ids[1], ids[2], newcomer] };
        let txs = vec![
            Tx::sign(&w.newcomer, chain, (0, chain), 10, stand).expect("sign"),
            Tx::sign(&w.voter, chain, (0, chain), 10, ballot).expect("sign"),
        ];
        run(&store, g, 1, 4, 2, txs);
        assert_eq!(store.set_at(5).expect("set"), store.set_at(1).expect("set"), "nothing changes before the boundary");
        run(&store, g, 5, 5, 0, Vec::new());
        // Elected at 5, in force from 7 (delay 2): the newcomer in, producer 3 out.
        let at7 = store.set_at(7).expect("set");
        assert!(at7.contains(&newcomer) && !at7.contains(&ids[3]), "{at7:?}");
        assert_eq!(store.set_at(6).expect("set").len(), 4);
        assert!(store.set_at(6).expect("set").contains(&ids[3]));

        // Producer 1 equivocates at height 3: jailed, 10% burned, out at the next boundary.
        let epoch = set_hash(&store.set_at(3).expect("set"));
        let evidence = Body::Evidence {
            first: vote(&w.producers[1], chain, epoch, 1),
            second: vote(&w.producers[1], chain, epoch, 2),
        };
        let tx = Tx::sign(&w.voter, chain, (0, chain), 20, evidence).expect("sign");
        crate::validate::check_tx(&store, chain, 6, &tx).expect("the evidence holds");
        run(&store, g, 6, 10, 6, vec![tx.clone()]);
        assert_eq!(store.jailed(&ids[1]).expect("jailed"), Some(6));
        assert_eq!(store.stake(&ids[1]).expect("stake"), 900);
        let at12 = store.set_at(12).expect("set");
        assert!(!at12.contains(&ids[1]) && at12.contains(&ids[3]) && at12.contains(&newcomer), "{at12:?}");
        // The same offence again is refused.
        let again = Body::Evidence {
            first: vote(&w.producers[1], chain, epoch, 2),
            second: vote(&w.producers[1], chain, epoch, 1),
        };
        let tx2 = Tx::sign(&w.voter, chain, (0, chain), 20, again).expect("sign");
        assert!(crate::validate::check_tx(&store, chain, 11, &tx2).is_err());
        // Agreeing votes, or a stranger's, are no evidence.
        let same = Body::Evidence {
            first: vote(&w.producers[2], chain, epoch, 1),
            second: vote(&w.producers[2], chain, epoch, 1),
        };
        let tx3 = Tx::sign(&w.voter, chain, (0, chain), 20, same).expect("sign");
        assert!(crate::validate::check_tx(&store, chain, 11, &tx3).is_err());
        let stranger = Keypair::generate_ed25519();
        let forged =
            Body::Evidence { first: vote(&stranger, chain, epoch, 1), second: vote(&stranger, chain, epoch, 2) };
        let tx4 = Tx::sign(&w.voter, chain, (0, chain), 20, forged).expect("sign");
        assert!(crate::validate::check_tx(&store, chain, 11, &tx4).is_err());
    }

    #[test]
    fn after_a_recovery_the_next_elections_keep_its_set_and_not_the_lost_producers() {
        let w = world();
        let g = &w.genesis;
        let chain = g.hash();
        let (_dir, store, ids, newcomer) = opened(&w);
        run(&store, g, 1, 3, 0, Vec::new());
        let mut r = crate::Recovery {
            chain,
            height: 4,
            last: store.hash_at(3).expect("read").expect("block 3"),
            producers: vec![ids[0], ids[1], newcomer],
            signatures: Vec::new(),
        };
        r.sign(&w.producers[0]).expect("sign");
        r.sign(&w.producers[1]).expect("sign");
        store.recover(&r).expect("recover");
        run(&store, g, 4, 12, 0, Vec::new());
        let mut at12 = store.set_at(12).expect("set");
        at12.sort();
        let mut want = vec![ids[0], ids[1], newcomer];
        want.sort();
        assert_eq!(at12, want, "two elections later, the recovered set stands");
        // A store that already holds the recovery's height refuses it.
        assert!(store.recover(&r).is_err());
    }

    #[test]
    fn an_account_without_stake_cannot_vote() {
        let w = world();
        let chain = w.genesis.hash();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), chain).expect("store");
        store.seed(&w.genesis).expect("seed");
        let nobody = Keypair::generate_ed25519();
        let tx = Tx::sign(&nobody, chain, (0, chain), 10, Body::Vote { candidates: vec![] }).expect("sign");
        assert!(matches!(crate::validate::check_tx(&store, chain, 1, &tx), Err(Error::Tx(crate::TxError::Invalid(_)))));
    }

    /// Check `body` signed by `key` against the chain at `height`.
    fn offer(store: &Store, g: &Genesis, key: &Keypair, height: u64, body: Body) -> (Tx, Result<()>) {
        let chain = g.hash();
        let at = height - 1;
        let reference = if at == 0 { chain } else { store.hash_at(at).expect("read").expect("block") };
        let tx = Tx::sign(key, chain, (at, reference), 50, body).expect("sign");
        let r = crate::validate::check_tx(store, chain, height, &tx);
        (tx, r)
    }

    fn device(store: &Store, id: PeerId) -> Option<crate::Device> {
        match store.lookup(&crate::Lookup::Device(id)).expect("lookup") {
            crate::Record::Device(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn manufacturers_need_the_admins_threshold_and_a_device_is_registered_once_and_changed_only_by_its_maker_or_owner()
    {
        use crate::TxError;
        let w = world();
        let g = &w.genesis;
        let (_dir, store, _, _) = opened(&w);
        run(&store, g, 1, 1, 0, Vec::new());
        let maker = Keypair::generate_ed25519();
        let m = maker.public().to_peer_id();
        let admit = || Body::Admit { manufacturer: m, name: "Acme".into(), admit: true };
        let stranger = Keypair::generate_ed25519();
        let (_, r) = offer(&store, g, &stranger, 2, admit());
        assert!(matches!(r, Err(Error::Tx(TxError::NotAdmin(_)))), "{r:?}");
        let (first, r) = offer(&store, g, &w.admins[0], 2, admit());
        r.expect("an admin approves");
        run(&store, g, 2, 2, 2, vec![first]);
        assert_eq!(store.lookup(&crate::Lookup::Maker(m)).expect("lookup"), crate::Record::Maker(None), "1 of 2");
        let (_, r) = offer(&store, g, &w.admins[0], 3, admit());
        assert!(r.is_err(), "one admin approves once");
        let phone = Keypair::generate_ed25519().public().to_peer_id();
        let register = || Body::Register { device: phone, product: "router".into(), hardware: "r1".into() };
        let (_, r) = offer(&store, g, &maker, 3, register());
        assert!(matches!(r, Err(Error::Tx(TxError::NotManufacturer(_)))), "{r:?}");
        let (second, r) = offer(&store, g, &w.admins[1], 3, admit());
        r.expect("a second admin approves");
        run(&store, g, 3, 3, 3, vec![second]);
        assert!(matches!(store.lookup(&crate::Lookup::Maker(m)).expect("lookup"), crate::Record::Maker(Some(_))));

        let (reg, r) = offer(&store, g, &maker, 4, register());
        r.expect("an admitted manufacturer registers");
        run(&store, g, 4, 4, 4, vec![reg.clone()]);
        let d = device(&store, phone).expect("registered");
        assert_eq!((d.status.as_str(), d.registration.as_str()), ("active", reg.id().to_string().as_str()));
        let (_, r) = offer(&store, g, &maker, 5, register());
        assert!(matches!(r, Err(Error::Tx(TxError::AlreadyRegistered { .. }))), "{r:?}");

        let owner = Keypair::generate_ed25519();
        let o = owner.public().to_peer_id();
        let (_, r) = offer(&store, g, &stranger, 5, Body::Lifecycle { device: phone, change: Change::Transfer(o) });
        assert!(matches!(r, Err(Error::Tx(TxError::NotYours { .. }))), "{r:?}");
        let (t, r) = offer(&store, g, &maker, 5, Body::Lifecycle { device: phone, change: Change::Transfer(o) });
        r.expect("the manufacturer transfers");
        run(&store, g, 5, 5, 5, vec![t]);
        let (retire, r) = offer(&store, g, &owner, 6, Body::Lifecycle { device: phone, change: Change::Retire });
        r.expect("the owner retires it");
        run(&store, g, 6, 6, 6, vec![retire.clone()]);
        let d = device(&store, phone).expect("registered");
        assert_eq!((d.status.as_str(), d.owner, d.last_tx), ("retired", o.to_string(), retire.id().to_string()));
        let (_, r) = offer(&store, g, &maker, 7, Body::Lifecycle { device: phone, change: Change::Transfer(m) });
        assert!(r.is_err(), "a retired device changes no more");

        // Two registrations of one device cannot share a block.
        let tv = Keypair::generate_ed25519().public().to_peer_id();
        let reference = (6, store.hash_at(6).expect("r").expect("b"));
        let [a, b] = ["a", "b"].map(|hw| {
            let body = Body::Register { device: tv, product: "tv".into(), hardware: hw.into() };
            Tx::sign(&maker, g.hash(), reference, 50, body).expect("sign")
        });
        let block = Block {
            chain: g.hash(),
            height: 7,
            parent: store.hash_at(6).expect("r").expect("b"),
            time_ms: 7,
            proposer: m,
            next_set: set_hash(&store.set_at(8).expect("set")),
            txs: vec![a, b],
        };
        let r = crate::validate::check_block(&store, g.hash(), 6, &block, u64::MAX / 2);
        assert!(matches!(r, Err(Error::InvalidBlock { .. })), "{r:?}");
        // Nor a registration and an admin's approval of its manufacturer's removal.
        let mut block = block;
        let remove = Body::Admit { manufacturer: m, name: "Acme".into(), admit: false };
        block.txs[1] = Tx::sign(&w.admins[0], g.hash(), reference, 50, remove).expect("sign");
        assert!(crate::validate::check_tx(&store, g.hash(), 7, &block.txs[1]).is_ok());
        let r = crate::validate::check_block(&store, g.hash(), 6, &block, u64::MAX / 2);
        assert!(matches!(r, Err(Error::InvalidBlock { .. })), "{r:?}");
    }

    #[test]
    fn authorizations_deletions_releases_and_points_are_recorded_once_and_points_need_an_anchored_batch() {
        use crate::{Credit, Lookup, Record};
        let w = world();
        let g = &w.genesis;
        let (_dir, store, _, _) = opened(&w);
        run(&store, g, 1, 1, 0, Vec::new());
        let owner = Keypair::generate_ed25519();
        let o = owner.public().to_peer_id();
        let friend = Keypair::generate_ed25519().public().to_peer_id();
        let grant = |grant| Body::Authorize { object: "b3obj".into(), receiver: friend, grant };
        let (_, r) = offer(&store, g, &owner, 2, grant(false));
        assert!(r.is_err(), "nothing to revoke");
        let (t, r) = offer(&store, g, &owner, 2, grant(true));
        r.expect("grant");
        run(&store, g, 2, 2, 2, vec![t]);
        let q = Lookup::Authorized { owner: o, object: "b3obj".into(), receiver: friend };
        assert_eq!(store.lookup(&q).expect("lookup"), Record::Authorized(Some(2)));
        let (t, r) = offer(&store, g, &owner, 3, grant(false));
        r.expect("revoke");
        run(&store, g, 3, 3, 3, vec![t]);
        assert_eq!(store.lookup(&q).expect("lookup"), Record::Authorized(None));

        let del = || Body::Deletion { object: "b3obj".into(), acks_root: [4; 32], acks: 7 };
        let (t, r) = offer(&store, g, &owner, 4, del());
        r.expect("deletion");
        run(&store, g, 4, 4, 4, vec![t.clone()]);
        let Record::Deletion(Some(d)) =
            store.lookup(&Lookup::Deletion { owner: o, object: "b3obj".into() }).expect("l")
        else {
            panic!("no deletion recorded")
        };
        assert_eq!((d.acks, d.height, d.tx), (7, 4, t.id().to_string()));
        assert!(offer(&store, g, &owner, 5, del()).1.is_err(), "attested once");

        let rel = || Body::Release {
            product: "router".into(),
            version: "1.0".into(),
            manifest: "b3m".into(),
            image_hash: [1; 32],
        };
        let (t, r) = offer(&store, g, &owner, 5, rel());
        r.expect("release");
        run(&store, g, 5, 5, 5, vec![t.clone()]);
        assert!(offer(&store, g, &owner, 6, rel()).1.is_err(), "a version is recorded once per signer");
        let Record::Releases(list) = store
            .lookup(&Lookup::Release { product: "router".into(), version: "1.0".into(), signer: None })
            .expect("l")
        else {
            panic!("not releases")
        };
        assert_eq!(list, vec![crate::Release { signer: o.to_string(), tx: t.id().to_string() }]);

        let spn = Keypair::generate_ed25519();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let credit = |bh| Body::Points { root: [9; 32], credits: vec![Credit { peer, byte_hours: bh, audits: 2 }] };
        let (_, r) = offer(&store, g, &spn, 6, credit(100));
        assert!(r.is_err(), "no anchored batch with that root");
        let anchor = Body::Anchor { kind: crate::AnchorKind::Receipts, root: [9; 32], count: 1, bytes: 10 };
        let (t, r) = offer(&store, g, &spn, 6, anchor);
        r.expect("anchor");
        run(&store, g, 6, 6, 6, vec![t]);
        let (t, r) = offer(&store, g, &spn, 7, credit(100));
        r.expect("points from an anchored batch");
        run(&store, g, 7, 7, 7, vec![t]);
        assert!(offer(&store, g, &spn, 8, credit(5)).1.is_err(), "a peer is credited once per batch");
        let Record::Points(p) = store.lookup(&Lookup::Points(peer)).expect("lookup") else { panic!("not points") };
        assert_eq!((p.byte_hours, p.audits, p.by.len()), (100, 2, 1));
        let own = Body::Points {
            root: [9; 32],
            credits: vec![Credit { peer: spn.public().to_peer_id(), byte_hours: 1, audits: 0 }],
        };
        assert!(offer(&store, g, &spn, 8, own).1.is_err(), "no points to oneself");
    }
}
