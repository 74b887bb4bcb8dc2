//! The node's ledger task: one loop that feeds Malachite's consensus core
//! with what arrives (gossip, timeouts, sync answers, its own proposals)
//! and carries out what the core asks (sign, verify, publish, log, commit).
//!
//! The loop owns the core's state and the store; a cloneable [`Ledger`]
//! sends it commands over a bounded channel, and what it sends to the
//! network leaves over another ([`Out`]), so the network layer (the node's
//! own libp2p swarm) stays outside this crate.
//!
//! Heights: the core decides height `h` ([`Effect::Decide`]): the block and
//! its certificate are committed to the store, synced, at once. When the
//! core finalizes `h`, the next height starts `block_ms` after block `h`'s
//! time (at once when this node is behind and syncing).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::{Keypair, PeerId};
use malachite::{
    ConsensusMsg, Effect, Input, LivenessMsg, LocallyProposedValue, Params, ProposedValue, Resumable, Resume, State,
    ValuePayload,
};
use malachite_types::{
    CertificateError, ExtendedCommitCertificate, ExtendedCommitSignature, LinearTimeouts, Round, SignedMessage,
    SignedProposal, Timeout, Timeouts, Validity, ValueOrigin, ValueResponse, VoteExtensionPolicy,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::block::{Block, Hash, MAX_BLOCK_BYTES, MAX_TXS};
use crate::cert::{self, Certificate};
use crate::ctx::{Address, Ctx, Height, Signature, ValidatorSet};
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::store::Store;
use crate::tx::{Tx, TxId};
use crate::validate::{check_block, check_tx, hash_at};
use crate::wire::{self, Message};

/// Transactions waiting for a block, at most.
const MAX_POOL: usize = 10_000;
/// Of those, one signer's at most: transactions cost nothing to sign, and
/// one key's flood filled the pool (the SPN's anchors were refused).
const MAX_POOL_PER_SIGNER: usize = 128;
/// Proposals for heights ahead of ours kept until we get there, at most
/// (each up to a 4 MiB block).
const MAX_EARLY: usize = 8;
/// Distinct blocks kept for one height, at most (one per round proposed).
const MAX_VALUES: usize = 64;

/// Rounds ahead of this node's own whose proposals are taken: what the core
/// keeps of rounds ahead (a node behind in rounds catches up by them).
const ROUNDS_AHEAD: i64 = malachite::MAX_FUTURE_ROUND_LOOKAHEAD as i64;
/// Peers remembered for misleading this node's sync.
const MAX_MISLED: usize = 1024;
/// How often a node tells the others its newest final block.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long a sync question may stay unanswered before another is asked.
const SYNC_PATIENCE: Duration = Duration::from_secs(5);

/// What the ledger sends out through the network layer.
#[derive(Debug)]
pub enum Out {
    /// Gossip these bytes on the chain's topic.
    Publish(Vec<u8>),
    /// Ask `peer` the sync protocol's question; hand the answer to
    /// [`Ledger::sync_answer`].
    Ask {
        /// Whom.
        peer: PeerId,
        /// The height asked for.
        height: u64,
        /// The question's bytes.
        bytes: Vec<u8>,
    },
}

/// Where the chain stands, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The chain (genesis hash, hex).
    pub chain: String,
    /// The newest final block's height.
    pub height: u64,
    /// Its hash (hex).
    pub hash: String,
    /// The round the current height is in.
    pub round: i64,
    /// The producers, in the set's order.
    pub producers: Vec<String>,
    /// Whether this node is one of them.
    pub producing: bool,
    /// Missed proposer slots per producer.
    pub missed: BTreeMap<String, u64>,
    /// Transactions waiting for a block here.
    pub pool: usize,
    /// The highest height another node announced.
    pub best_seen: u64,
    /// Elected producer sets not in force yet: the height each starts at, and its producers.
    pub next_producers: Vec<(u64, Vec<String>)>,
    /// The snapshot height this node started from (it holds no block before it), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<u64>,
}

enum Command {
    Gossip(PeerId, Vec<u8>),
    SyncAnswer(PeerId, u64, Option<Vec<u8>>),
    Submit(Box<Tx>, oneshot::Sender<Result<TxId>>),
    Status(oneshot::Sender<Status>),
    Stop,
}

/// A handle to the running ledger task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    store: Arc<Store>,
    chain: Hash,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Ledger {
    /// Hand over a gossip message that arrived from `from`.
    pub async fn gossip(&self, from: PeerId, bytes: Vec<u8>) {
        let _ = self.tx.send(Command::Gossip(from, bytes)).await;
    }
    /// Hand over the answer to an [`Out::Ask`] (`None`: no answer came).
    pub async fn sync_answer(&self, from: PeerId, height: u64, bytes: Option<Vec<u8>>) {
        let _ = self.tx.send(Command::SyncAnswer(from, height, bytes)).await;
    }
    /// Offer a transaction: checked against the chain, pooled and gossiped.
    pub async fn submit(&self, tx: Tx) -> Result<TxId> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Submit(Box::new(tx), reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
    /// Where the chain stands.
    pub async fn status(&self) -> Result<Status> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Status(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }
    /// Stop the task.
    pub async fn stop(&self) {
        let _ = self.tx.send(Command::Stop).await;
    }
    /// The chain's store (read-only use: proofs, lookups, sync answers).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
    /// The chain's id.
    pub fn chain(&self) -> Hash {
        self.chain
    }
    /// Answer the sync protocol's question `ask` from the store.
    pub fn answer(&self, ask: &[u8]) -> Vec<u8> {
        answer(&self.store, ask)
    }
}

/// Answer a sync question (a height as 8 big-endian bytes) from `store`.
pub fn answer(store: &Store, ask: &[u8]) -> Vec<u8> {
    let Ok(bytes) = <[u8; 8]>::try_from(ask) else { return wire::encode_answer(None) };
    match store.raw_at(u64::from_be_bytes(bytes)) {
        Ok(Some((b, c))) => wire::encode_answer(Some((&b, &c))),
        _ => wire::encode_answer(None),
    }
}

fn stopped() -> Error {
    Error::Signing("the ledger task has stopped".into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Start the ledger task for `genesis` with its store in `dir`, signing
/// with `key` (a producer when its peer id is in the set). What it sends to
/// the network goes to `out`.
pub fn start(
    genesis: &Genesis,
    dir: &std::path::Path,
    key: Keypair,
    out: mpsc::Sender<Out>,
) -> Result<(Ledger, tokio::task::JoinHandle<()>)> {
    genesis.check()?;
    let chain = genesis.hash();
    let store = Arc::new(Store::open(dir, chain)?);
    store.seed(genesis)?;
    let (tx, rx) = mpsc::channel(256);
    let ledger = Ledger { tx, store: store.clone(), chain };
    let me = Address(key.public().to_peer_id());
    let height = store.height()? + 1;
    let set = set_for(genesis, &store, chain, height)?;
    let params = Params {
        address: me,
        threshold_params: Default::default(),
        value_payload: ValuePayload::ProposalOnly,
        enabled: true,
    };
    let consensus = State::new(Ctx { chain }, Height(height), set.clone(), params, 1024, 256);
    let propose = Duration::from_millis(genesis.params.propose_ms);
    let timeouts = LinearTimeouts {
        propose,
        propose_delta: propose / 2,
        prevote: propose / 2,
        prevote_delta: propose / 4,
        precommit: propose / 2,
        precommit_delta: propose / 4,
        rebroadcast: propose * 2,
        max_timeout: Duration::from_secs(60),
    };
    let app = App {
        chain,
        genesis: genesis.clone(),
        key,
        me,
        store,
        out,
        set,
        height,
        timeouts,
        timers: HashMap::new(),
        queue: VecDeque::new(),
        values: HashMap::new(),
        proposed: HashMap::new(),
        own: HashMap::new(),
        early: BTreeMap::new(),
        pool: VecDeque::new(),
        pooled: HashSet::new(),
        per_signer: HashMap::new(),
        next_start: None,
        idle_until: None,
        nudged: false,
        synced: false,
        wal_broken: false,
        replaying: false,
        best: None,
        asked: None,
        misled: Default::default(),
        round: -1,
    };
    let engine = Engine { consensus, app };
    Ok((ledger, tokio::spawn(engine.run(rx))))
}

/// The producer set for `height`: the genesis's until an election changes
/// it, each producer with equal voting power; seeded by the hash before it.
fn set_for(genesis: &Genesis, store: &Store, chain: Hash, height: u64) -> Result<ValidatorSet> {
    let seed = hash_at(store, chain, height - 1)?
        .ok_or_else(|| Error::UnknownBlock(format!("block {} is missing from the store", height - 1)))?;
    let peers = store.set_at(height)?;
    if peers.is_empty() {
        return Ok(genesis.validators(seed));
    }
    Ok(ValidatorSet::new(peers.into_iter().filter_map(|p| crate::ctx::validator(p, 1)).collect(), seed))
}

struct Engine {
    consensus: State<Ctx>,
    app: App,
}

struct App {
    chain: Hash,
    genesis: Genesis,
    key: Keypair,
    me: Address,
    store: Arc<Store>,
    out: mpsc::Sender<Out>,
    /// The producer set of the height being decided.
    set: ValidatorSet,
    /// The height being decided (the store holds everything below it).
    height: u64,
    timeouts: LinearTimeouts,
    timers: HashMap<Timeout, Instant>,
    /// Inputs the effects produced, fed to the core once it returns.
    queue: VecDeque<Input<Ctx>>,
    /// Blocks for the current height that passed the checks, by hash.
    values: HashMap<Hash, Block>,
    /// The block taken for each round of the current height (the first its
    /// proposer signed).
    proposed: HashMap<i64, Hash>,
    /// Blocks this node proposed at the current height, by round: asked
    /// again for a round it proposed in (a restart replays the log), it
    /// proposes the same block, never a second one.
    own: HashMap<i64, Block>,
    /// Proposals for later heights, checked once we get there.
    early: BTreeMap<u64, Vec<SignedProposal<Ctx>>>,
    pool: VecDeque<Tx>,
    pooled: HashSet<TxId>,
    /// How many of the pool's transactions each signer has.
    per_signer: HashMap<PeerId, usize>,
    /// When to start the next height (after a final block), if a
    /// transaction waits by then...
    next_start: Option<Instant>,
    /// ...and when at the latest, with none.
    idle_until: Option<Instant>,
    /// Another node started the next height: start it now.
    nudged: bool,
    /// The block being decided came by sync (this node is behind).
    synced: bool,
    /// The write-ahead log failed: sign nothing more.
    wal_broken: bool,
    /// Replaying the write-ahead log: do not log again.
    replaying: bool,
    /// The best height another node announced, and who.
    best: Option<(u64, PeerId)>,
    /// Peers whose sync answer was not the block asked for: their
    /// announcements are not followed again (a peer claiming height
    /// u64::MAX and answering with another block held every sync on itself).
    misled: std::collections::HashSet<PeerId>,
    /// The sync question in flight: the height, and when it was asked.
    asked: Option<(u64, Instant)>,
    round: i64,
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let h = self.app.height;
        let set = self.app.set.clone();
        let wal: Vec<Input<Ctx>> = match self.app.store.wal() {
            Ok(entries) => entries.iter().filter_map(|e| wire::decode_wal(e).ok()).collect(),
            Err(e) => {
                warn!("reading the ledger's write-ahead log: {e}");
                Vec::new()
            }
        };
        // What the log says this node proposed and saw, before the core asks again.
        for input in &wal {
            let (block, proposer, round) = match input {
                Input::Proposal(p) => (&p.message.block, p.message.proposer, p.message.round),
                Input::ProposedValue(v, _) => (&v.value, v.proposer, v.round),
                _ => continue,
            };
            self.app.values.insert(block.hash(), block.clone());
            self.app.proposed.entry(round.as_i64()).or_insert_with(|| block.hash());
            if proposer == self.app.me {
                self.app.own.insert(round.as_i64(), block.clone());
            }
        }
        self.feed(Input::StartHeight(Height(h), set, !wal.is_empty(), None, VoteExtensionPolicy::Disabled));
        if !wal.is_empty() {
            info!(height = h, entries = wal.len(), "replaying the ledger's write-ahead log");
            self.app.replaying = true;
            self.consensus.index_wal_entries(wal.iter());
            for input in wal {
                self.feed(input);
            }
            self.consensus.reset_entries_index();
            self.app.replaying = false;
        }
        let mut status = tokio::time::interval(STATUS_EVERY);
        loop {
            let wake = self.app.next_wake();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(cmd) => {
                        self.command(cmd);
                        if self.app.next_start.is_some() {
                            self.wake();
                        }
                    }
                },
                () = sleep_until(wake) => self.wake(),
                _ = status.tick() => self.app.announce(),
            }
        }
    }

    /// Feed one input and every input its effects queued.
    fn feed(&mut self, input: Input<Ctx>) {
        self.app.queue.push_back(input);
        while let Some(input) = self.app.queue.pop_front() {
            let app = &mut self.app;
            let r: std::result::Result<(), malachite::Error<Ctx>> = malachite::process!(
                input: input,
                state: &mut self.consensus,
                metrics: &(),
                with: effect => app.effect(effect)
            );
            if let Err(e) = r {
                debug!("consensus: {e}");
            }
            self.app.round = self.consensus.round().as_i64();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Gossip(from, bytes) => match Message::decode(&bytes) {
                Ok(Message::Vote(v)) => self.feed(Input::Vote(v)),
                Ok(Message::Proposal(p)) => self.proposal(p),
                Ok(Message::Tx(tx)) => {
                    let _ = self.app.pool_tx(tx);
                }
                Ok(Message::Status { height, .. }) => {
                    if !self.app.misled.contains(&from) && self.app.best.is_none_or(|(h, _)| height > h) {
                        self.app.best = Some((height, from));
                    }
                    self.app.maybe_sync();
                }
                Err(e) => debug!(%from, "ledger gossip refused: {e}"),
            },
            Command::SyncAnswer(from, height, bytes) => self.synced(from, height, bytes),
            Command::Submit(tx, reply) => {
                let r = self.app.pool_tx(*tx.clone());
                if r.is_ok() {
                    self.app.publish(&Message::Tx(*tx));
                }
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.app.status());
            }
            Command::Stop => {}
        }
    }

    fn wake(&mut self) {
        let now = Instant::now();
        let due = self.app.next_start.is_some_and(|t| t <= now);
        let busy = !self.app.pool.is_empty() || self.app.nudged;
        if due && (busy || self.app.idle_until.is_none_or(|t| t <= now)) {
            self.app.next_start = None;
            self.app.idle_until = None;
            self.app.nudged = false;
            self.start_next();
        }
        let due: Vec<Timeout> = self.app.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
        for t in due {
            self.app.timers.remove(&t);
            self.feed(Input::TimeoutElapsed(t));
        }
        if self.app.asked.is_some_and(|(_, at)| now.duration_since(at) > SYNC_PATIENCE) {
            self.app.asked = None;
            self.app.best = None;
        }
    }

    /// Start the height after the one just final.
    fn start_next(&mut self) {
        let h = self.app.height + 1;
        let set = match set_for(&self.app.genesis, &self.app.store, self.app.chain, h) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot start height {h}: {e}");
                return;
            }
        };
        self.app.height = h;
        self.app.set = set.clone();
        self.app.values.clear();
        self.app.proposed.clear();
        self.app.own.clear();
        self.app.timers.clear();
        self.feed(Input::StartHeight(Height(h), set, false, None, VoteExtensionPolicy::Disabled));
        let early = self.app.early.remove(&h).unwrap_or_default();
        self.app.early.retain(|k, _| *k > h);
        for p in early {
            self.proposal(p);
        }
        self.app.maybe_sync();
    }

    fn proposal(&mut self, p: SignedProposal<Ctx>) {
        let h = p.message.height.0;
        if h == self.app.height && self.app.next_start.is_some() {
            return; // that height is final here already
        }
        if h > self.app.height {
            // Only a proposal its round's proposer signed, for a height whose
            // producers are known here: anyone's junk filled the few places
            // kept, and the next height's real proposal (never sent again)
            // was dropped, its round lost.
            let round = p.message.round.as_i64();
            let signed = h <= self.app.height + 2
                && (0..=ROUNDS_AHEAD).contains(&round)
                && set_for(&self.app.genesis, &self.app.store, self.app.chain, h)
                    .is_ok_and(|set| signed_by_proposer(&self.app, &p, &set));
            if !signed {
                return;
            }
            // The next height's proposer started it: start it here too
            // (strangers cannot hurry the pacing).
            if h == self.app.height + 1 && self.app.next_start.is_some() {
                self.app.nudged = true;
            }
            // Kept until that height starts; when the places are taken, the
            // lowest heights and rounds stay (round 0's proposal first).
            keep_early(&mut self.app.early, p);
            return;
        }
        if h < self.app.height {
            return;
        }
        // Who may propose this round, and did they sign it? Checked before
        // the block is (a stranger's blocks cost a signature check, nothing more).
        // The block's own `proposer` field is not compared: a producer locked
        // on a block re-proposes it in a later round under its own name.
        if !signed_by_proposer(&self.app, &p, &self.app.set) {
            debug!(height = h, "a proposal not signed by the round's proposer, dropped");
            return;
        }
        self.app.nudged = true;
        let block = &p.message.block;
        // One block a round, for rounds that can matter: a producer that
        // signed many blocks for its round, or for rounds far ahead (which
        // the core drops), filled `values`, and every honest proposal of
        // the height's later rounds was dropped: the chain stopped.
        let (round, pol) = (p.message.round.as_i64(), p.message.pol_round.as_i64());
        if round < 0 || round > self.app.round.max(0) + ROUNDS_AHEAD || pol >= round {
            debug!(height = h, round, pol, "a proposal for a round out of reach, dropped");
            return;
        }
        if self.app.proposed.get(&round).is_some_and(|seen| *seen != block.hash()) {
            warn!(height = h, round, "a second block proposed for one round (equivocation), dropped");
            return;
        }
        if self.app.values.len() >= MAX_VALUES && !self.app.values.contains_key(&block.hash()) {
            debug!(height = h, "too many blocks proposed at this height; dropped");
            return;
        }
        match self.app.check(block) {
            Ok(()) => {
                self.app.proposed.insert(round, block.hash());
                self.app.values.insert(block.hash(), block.clone());
                self.feed(Input::Proposal(p));
            }
            Err(e) => warn!(height = h, "invalid proposal refused: {e}"),
        }
    }

    fn synced(&mut self, from: PeerId, height: u64, bytes: Option<Vec<u8>>) {
        if self.app.asked.is_some_and(|(h, _)| h == height) {
            self.app.asked = None;
        }
        let Some(bytes) = bytes else {
            self.app.best = None;
            return;
        };
        let (block, c) = match wire::decode_answer(&bytes) {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.app.best = None;
                return;
            }
            Err(e) => {
                warn!(%from, "sync answer refused: {e}");
                self.app.distrust(from);
                return;
            }
        };
        // A late answer to a question of a height decided meanwhile (two
        // were asked, one answered first): nothing wrong with it.
        if height != self.app.height {
            return;
        }
        if block.height != height || c.height.0 != height || c.value_id != block.hash() {
            warn!(%from, "sync answer was not the block asked for: its announcements are no longer followed");
            self.app.distrust(from);
            return;
        }
        let Ok(peer) = malachite::PeerId::from_bytes(&from.to_bytes()) else { return };
        let certificate = ExtendedCommitCertificate {
            height: c.height,
            round: c.round,
            value_id: c.value_id,
            commit_signatures: c
                .commit_signatures
                .into_iter()
                .map(|s| ExtendedCommitSignature::new(s.address, s.signature, None))
                .collect(),
        };
        let response = ValueResponse::new(peer, bytes::Bytes::from(block.encode()), certificate);
        self.feed(Input::SyncValueResponse(response));
        if self.app.next_start.is_none() {
            // The block did not decide the height (refused, or another on the
            // way): ask again only after a pause, not in a loop.
            self.app.asked = Some((height, Instant::now()));
            return;
        }
        self.app.maybe_sync();
    }
}

/// Keep `p` (signed, for a height ahead) among at most [`MAX_EARLY`]
/// proposals: when full, it takes the place of the one furthest ahead (by
/// height, then round) if it comes before that one.
fn keep_early(early: &mut BTreeMap<u64, Vec<SignedProposal<Ctx>>>, p: SignedProposal<Ctx>) {
    let key = |q: &SignedProposal<Ctx>| (q.message.height.0, q.message.round.as_i64());
    if early.values().flatten().any(|q| key(q) == key(&p) && q.message.block.hash() == p.message.block.hash()) {
        return;
    }
    if early.values().map(Vec::len).sum::<usize>() >= MAX_EARLY {
        let Some(last) = early.values().flatten().map(key).max() else { return };
        if key(&p) >= last {
            return;
        }
        if let Some(list) = early.get_mut(&last.0)
            && let Some(at) = list.iter().position(|q| key(q) == last)
        {
            list.remove(at);
            if list.is_empty() {
                early.remove(&last.0);
            }
        }
    }
    early.entry(p.message.height.0).or_default().push(p);
}

/// After a block: drop from the pool what it holds (`done`) and what can
/// no longer go in a block from `next` on (its expiry passed). A node
/// that never proposes pruned nothing else: transactions that expired
/// piled up until its pool was full and it refused every submission.
fn prune_pool(pool: &mut VecDeque<Tx>, pooled: &mut HashSet<TxId>, done: &HashSet<TxId>, next: u64) {
    pool.retain(|t| {
        let id = t.id();
        let keep = !done.contains(&id) && t.expiry >= next;
        if !keep {
            pooled.remove(&id);
        }
        keep
    });
    for id in done {
        pooled.remove(id);
    }
}

/// Whether `p` is signed by the proposer its round has in `set`.
fn signed_by_proposer(app: &App, p: &SignedProposal<Ctx>, set: &ValidatorSet) -> bool {
    use malachite_types::{Context as _, Validator as _};
    if set.validators().is_empty() {
        return false;
    }
    let v = Ctx { chain: app.chain }.select_proposer(set, p.message.height, p.message.round);
    p.message.proposer == *v.address() && v.key.verify(&p.message.signed_bytes(app.chain, set.hash()), &p.signature.0)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl App {
    fn next_wake(&self) -> Option<Instant> {
        let asked = self.asked.map(|(_, at)| at + SYNC_PATIENCE);
        // Past its time, the next height waits for a transaction (handled
        // as it arrives) or for the idle limit.
        let start = match self.next_start {
            Some(t) if t <= Instant::now() => self.idle_until,
            other => other,
        };
        self.timers.values().copied().chain(start).chain(asked).min()
    }

    fn publish(&self, m: &Message) {
        if self.out.try_send(Out::Publish(m.encode())).is_err() {
            debug!("ledger out queue full: a message dropped (votes are sent again)");
        }
    }

    fn announce(&self) {
        let h = self.height - 1;
        if let Ok(Some(hash)) = hash_at(&self.store, self.chain, h) {
            self.publish(&Message::Status { height: h, hash });
        }
    }

    /// `peer` misled this node's sync: forget its announcement and follow
    /// none of its later ones (the list is bounded: past [`MAX_MISLED`]
    /// made-up peer ids it starts again).
    fn distrust(&mut self, peer: PeerId) {
        if self.misled.len() >= MAX_MISLED {
            self.misled.clear();
        }
        self.misled.insert(peer);
        if self.best.is_some_and(|(_, p)| p == peer) {
            self.best = None;
        }
    }

    /// Ask for the next block when another node announced more than we hold.
    fn maybe_sync(&mut self) {
        let Some((best, peer)) = self.best else { return };
        if best < self.height || self.asked.is_some() || self.next_start.is_some() {
            return;
        }
        let h = self.height;
        if self.out.try_send(Out::Ask { peer, height: h, bytes: crate::rpc::Question::Block(h).encode() }).is_ok() {
            self.asked = Some((h, Instant::now()));
        }
    }

    fn parent_time(&self, height: u64) -> Result<u64> {
        if height <= 1 {
            return Ok(self.genesis.time_ms);
        }
        Ok(self.store.block_at(height - 1)?.map(|(b, _)| b.time_ms).unwrap_or(self.genesis.time_ms))
    }

    fn check(&self, block: &Block) -> Result<()> {
        check_block(&self.store, self.chain, self.parent_time(block.height)?, block, now_ms())
    }

    fn pool_tx(&mut self, tx: Tx) -> Result<TxId> {
        let id = tx.id();
        if self.pooled.contains(&id) {
            return Ok(id);
        }
        check_tx(&self.store, self.chain, self.height, &tx)?;
        if self.pool.len() >= MAX_POOL {
            return Err(Error::Tx(crate::error::TxError::Invalid(
                "the producer's pool is full; offer it again in a few blocks".into(),
            )));
        }
        let mine = self.per_signer.entry(tx.signer).or_default();
        if *mine >= MAX_POOL_PER_SIGNER {
            return Err(Error::Tx(crate::error::TxError::Invalid(format!(
                "{} transactions of this signer already wait for a block; offer more once some are in",
                MAX_POOL_PER_SIGNER
            ))));
        }
        *mine += 1;
        self.pooled.insert(id);
        self.pool.push_back(tx);
        Ok(id)
    }

    /// Count again whose transactions the pool holds (after it was pruned).
    fn recount(&mut self) {
        self.per_signer.clear();
        for tx in &self.pool {
            *self.per_signer.entry(tx.signer).or_default() += 1;
        }
    }

    /// The next block, from the pool's transactions that still pass.
    fn build(&mut self, height: u64) -> Result<Block> {
        let parent = hash_at(&self.store, self.chain, height - 1)?
            .ok_or_else(|| Error::UnknownBlock(format!("block {}", height - 1)))?;
        let time_ms = now_ms().max(self.parent_time(height)? + 1);
        let mut txs = Vec::new();
        let mut held = HashSet::new();
        let mut bytes = 0usize;
        // The newest snapshot's digest, when the chain has none for it yet.
        if let Some((cp, state, size)) = self.store.checkpoint_due(height)? {
            let body = crate::tx::Body::Checkpoint { height: cp, state, size };
            let tx = Tx::sign(&self.key, self.chain, (height - 1, parent), 8, body)?;
            held.extend(crate::registry::exclusive(&tx));
            bytes += tx.encode().len() + 4;
            txs.push(tx);
        }
        let mut keep = VecDeque::new();
        while let Some(tx) = self.pool.pop_front() {
            let id = tx.id();
            if check_tx(&self.store, self.chain, height, &tx).is_err() {
                self.pooled.remove(&id);
                continue;
            }
            let n = tx.encode().len() + 4;
            // One holder per key in a block; the others wait for the next.
            let keys = crate::registry::exclusive(&tx);
            if txs.len() < MAX_TXS && bytes + n < MAX_BLOCK_BYTES / 2 && keys.iter().all(|k| !held.contains(k)) {
                held.extend(keys);
                bytes += n;
                txs.push(tx.clone());
            }
            keep.push_back(tx);
        }
        self.pool = keep;
        self.recount();
        let next_set = crate::state::set_hash(&self.store.set_at(height + 1)?);
        Ok(Block { chain: self.chain, height, parent, time_ms, proposer: self.me.0, next_set, txs })
    }

    fn commit(&mut self, c: &Certificate) -> Result<()> {
        let block = self
            .values
            .get(&c.value_id)
            .cloned()
            .ok_or_else(|| Error::UnknownBlock(format!("decided block {} was never seen here", c.value_id)))?;
        let order = self.set.order(block.height);
        let rounds = c.round.as_u32().unwrap_or(0) as usize;
        let missed: Vec<Vec<u8>> =
            (0..rounds).map(|r| self.set.validators()[order[r % order.len()]].address.0.to_bytes()).collect();
        self.store.commit(&block, c, &missed, &self.genesis)?;
        let done: HashSet<TxId> = block.txs.iter().map(Tx::id).collect();
        prune_pool(&mut self.pool, &mut self.pooled, &done, block.height + 1);
        self.recount();
        info!(height = block.height, hash = %block.hash(), txs = block.txs.len(), round = rounds, "block final");
        // Behind (the block came by sync): the next at once. An announced
        // height alone does not hurry the pacing: anyone can announce one.
        let behind = std::mem::take(&mut self.synced);
        let pace = Duration::from_millis(self.genesis.params.block_ms);
        let since = Duration::from_millis(now_ms().saturating_sub(block.time_ms));
        self.next_start = Some(Instant::now() + if behind { Duration::ZERO } else { pace.saturating_sub(since) });
        let idle = Duration::from_millis(self.genesis.params.idle_ms);
        self.idle_until = Some(Instant::now() + if behind { Duration::ZERO } else { idle.saturating_sub(since) });
        Ok(())
    }

    fn status(&self) -> Status {
        let h = self.height - 1;
        let hash = hash_at(&self.store, self.chain, h).ok().flatten().unwrap_or_default();
        let missed = self
            .store
            .missed()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, n)| Some((PeerId::from_bytes(&k).ok()?.to_string(), n)))
            .collect();
        Status {
            chain: self.chain.to_hex(),
            height: h,
            hash: hash.to_hex(),
            round: self.round,
            producers: self.set.validators().iter().map(|v| v.address.0.to_string()).collect(),
            producing: self.set.validators().iter().any(|v| v.address == self.me),
            missed,
            pool: self.pool.len(),
            best_seen: self.best.map(|(h, _)| h).unwrap_or(0),
            next_producers: self
                .store
                .sets()
                .unwrap_or_default()
                .into_iter()
                .filter(|(from, _)| *from > self.height)
                .map(|(from, peers)| (from, peers.iter().map(ToString::to_string).collect()))
                .collect(),
            started_from: self.store.started_from().ok().flatten(),
        }
    }

    /// Put evidence of an equivocation on its way to a block: into the
    /// pool, and to the other producers.
    fn report(&mut self, height: u64, hash: Hash, first: Vec<u8>, second: Vec<u8>) {
        let body = crate::tx::Body::Evidence { first, second };
        match Tx::sign(&self.key, self.chain, (height, hash), 100, body) {
            Ok(tx) => {
                // The pool checks it against the next height, once this one is final.
                *self.per_signer.entry(tx.signer).or_default() += 1;
                self.pool.push_back(tx.clone());
                self.pooled.insert(tx.id());
                self.publish(&Message::Tx(tx));
            }
            Err(e) => warn!("signing evidence: {e}"),
        }
    }

    fn sign(&self, bytes: &[u8]) -> Signature {
        Signature(self.key.sign(bytes).unwrap_or_default())
    }

    fn effect(&mut self, effect: Effect<Ctx>) -> std::result::Result<Resume<Ctx>, Error> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.timers.clear();
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.timers.remove(&t);
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                let d = Timeouts::<Ctx>::duration_for(&self.timeouts, t);
                self.timers.insert(t, Instant::now() + d);
                r.resume_with(())
            }
            Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
            Effect::PublishConsensusMsg(msg, r) => {
                if !self.replaying {
                    match msg {
                        malachite::SignedConsensusMsg::Vote(v) => self.publish(&Message::Vote(v)),
                        malachite::SignedConsensusMsg::Proposal(p) => self.publish(&Message::Proposal(p)),
                    }
                }
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                if let LivenessMsg::Vote(v) = msg {
                    self.publish(&Message::Vote(v));
                }
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.publish(&Message::Vote(v));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(_, r) => r.resume_with(()),
            Effect::GetValue(height, round, _, r) => {
                let block = match self.own.get(&round.as_i64()) {
                    Some(b) => Ok(b.clone()),
                    None => self.build(height.0),
                };
                match block {
                    Ok(block) => {
                        self.values.insert(block.hash(), block.clone());
                        self.own.insert(round.as_i64(), block.clone());
                        self.queue.push_back(Input::Propose(LocallyProposedValue::new(height, round, block)));
                    }
                    Err(e) => warn!("cannot build block {height}: {e}"),
                }
                r.resume_with(())
            }
            Effect::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            Effect::CertVerifiedSyncValue(resp, proposer, r) => {
                match Block::decode(&resp.value_bytes) {
                    Ok(block) => {
                        // Certified by more than 2/3: the clock is not ours to judge it by.
                        let valid = check_block(
                            &self.store,
                            self.chain,
                            self.parent_time(block.height).unwrap_or(0),
                            &block,
                            u64::MAX - crate::validate::MAX_CLOCK_DRIFT_MS,
                        );
                        if let Err(e) = &valid {
                            warn!("a synced block does not check out: {e}");
                        }
                        self.values.insert(block.hash(), block.clone());
                        self.synced = true;
                        let value = ProposedValue {
                            height: Height(block.height),
                            round: resp.certificate.round,
                            valid_round: Round::Nil,
                            proposer,
                            value: block,
                            validity: Validity::from_bool(valid.is_ok()),
                        };
                        self.queue.push_back(Input::ProposedValue(value, ValueOrigin::Sync));
                    }
                    Err(e) => warn!("a synced block does not parse: {e}"),
                }
                r.resume_with(())
            }
            Effect::CertRejectedSyncValue(peer, height, e, r) => {
                warn!(%peer, %height, "a synced certificate was refused: {e}");
                self.best = None;
                r.resume_with(())
            }
            Effect::Decide(c, _, r) => {
                if let Err(e) = self.commit(&c) {
                    warn!("committing block {}: {e}", c.height);
                }
                r.resume_with(())
            }
            Effect::Finalize(c, _, evidence, r) => {
                for (who, doubles) in evidence.votes.iter() {
                    warn!(height = self.height, producer = %who, "a producer signed two votes for one step: submitting the evidence");
                    for (a, b) in doubles {
                        self.report(
                            c.height.0,
                            c.value_id,
                            Message::Vote(a.clone()).encode(),
                            Message::Vote(b.clone()).encode(),
                        );
                    }
                }
                r.resume_with(())
            }
            Effect::SignVote(..) | Effect::SignProposal(..) if self.wal_broken => {
                return Err(Error::Signing("the write-ahead log failed; restart the node".into()));
            }
            Effect::SignVote(v, r) => {
                let sig = self.sign(&v.signed_bytes(self.chain, self.set.hash()));
                r.resume_with(SignedMessage::new(v, sig))
            }
            Effect::SignProposal(p, r) => {
                let sig = self.sign(&p.signed_bytes(self.chain, self.set.hash()));
                r.resume_with(SignedMessage::new(p, sig))
            }
            Effect::VerifySignature(msg, key, r) => {
                let bytes = match &msg.message {
                    ConsensusMsg::Vote(v) => v.signed_bytes(self.chain, self.set.hash()),
                    ConsensusMsg::Proposal(p) => p.signed_bytes(self.chain, self.set.hash()),
                };
                r.resume_with(key.verify(&bytes, &msg.signature.0))
            }
            Effect::VerifyCommitCertificate(c, set, _, r) => r.resume_with(self.verify_cert(&c, &set)),
            Effect::VerifyExtendedCommitCertificate(c, set, _, _, r) => {
                r.resume_with(self.verify_cert(&c.trim_vote_extensions(), &set))
            }
            Effect::VerifyPolkaCertificate(_, set, _, r) => r.resume_with(Err(refused(&set))),
            Effect::VerifyRoundCertificate(_, set, _, r) => r.resume_with(Err(refused(&set))),
            Effect::WalAppend(height, input, r) => {
                if !self.replaying
                    && height.0 == self.height
                    && let Some(entry) = wire::encode_wal(&input)
                    && let Err(e) = self.store.wal_append(&entry)
                {
                    // Without its log a restart could sign a second vote:
                    // this node signs nothing more until it is restarted.
                    warn!("ledger write-ahead log: {e}; this node stops signing until it is restarted");
                    self.wal_broken = true;
                }
                r.resume_with(())
            }
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
        })
    }

    // The error type is the core's, as its resume value wants it.
    #[allow(clippy::result_large_err)]
    fn verify_cert(&self, c: &Certificate, set: &ValidatorSet) -> std::result::Result<(), CertificateError<Ctx>> {
        cert::verify(self.chain, c, set).map(|_| ()).map_err(|e| match e {
            Error::WeakCertificate { signed, total, .. } => {
                CertificateError::NotEnoughVotingPower { signed, total, expected: total * 2 / 3 + 1 }
            }
            _ => refused(set),
        })
    }
}

/// Polka and round certificates are never fed to the core here (votes are
/// gossiped one by one), so any such check is refused.
fn refused(set: &ValidatorSet) -> CertificateError<Ctx> {
    let total = set.validators().iter().map(|v| v.power).sum::<u64>();
    CertificateError::NotEnoughVotingPower { signed: 0, total, expected: total * 2 / 3 + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn early_proposal(height: u64, round: u32, seed: u8) -> SignedProposal<Ctx> {
        let key = Keypair::generate_ed25519();
        let block = Block {
            chain: Hash([1; 32]),
            height,
            parent: Hash([seed; 32]),
            time_ms: 1,
            proposer: key.public().to_peer_id(),
            next_set: Hash([2; 32]),
            txs: Vec::new(),
        };
        let proposal = crate::ctx::Proposal {
            height: Height(height),
            round: Round::new(round),
            block,
            pol_round: Round::Nil,
            proposer: Address(key.public().to_peer_id()),
        };
        SignedMessage::new(proposal, Signature(vec![0; 64]))
    }

    /// A producer's proposals for many rounds of the next height took
    /// every place kept: the next height's round-0 proposal, sent once,
    /// was dropped. The lowest rounds stay.
    #[test]
    fn junk_proposals_cannot_evict_the_next_heights_real_proposal() {
        let mut early = BTreeMap::new();
        for r in 1..=MAX_EARLY as u32 {
            keep_early(&mut early, early_proposal(11, r, r as u8));
        }
        keep_early(&mut early, early_proposal(11, 0, 99));
        let kept: Vec<(u64, i64)> =
            early.values().flatten().map(|p| (p.message.height.0, p.message.round.as_i64())).collect();
        assert_eq!(kept.len(), MAX_EARLY);
        assert!(kept.contains(&(11, 0)), "round 0 kept: {kept:?}");
        assert!(!kept.contains(&(11, MAX_EARLY as i64)), "the furthest round gave its place: {kept:?}");
        // One further ahead than all kept finds no place; the same one twice is kept once.
        keep_early(&mut early, early_proposal(12, 0, 7));
        let again = early.values().flatten().find(|p| p.message.round.as_i64() == 0).cloned().expect("round 0");
        keep_early(&mut early, again);
        assert_eq!(early.values().map(Vec::len).sum::<usize>(), MAX_EARLY);
        assert!(!early.contains_key(&12));
    }

    #[test]
    fn a_followers_pool_drops_expired_transactions() {
        let key = Keypair::generate_ed25519();
        let chain = Hash([3; 32]);
        let tx = |root: u8, lifetime: u64| {
            let body =
                crate::tx::Body::Anchor { kind: crate::tx::AnchorKind::Receipts, root: [root; 32], count: 1, bytes: 1 };
            Tx::sign(&key, chain, (10, chain), lifetime, body).expect("sign")
        };
        let (in_block, expiring, last_chance, lasting) = (tx(1, 100), tx(2, 1), tx(4, 2), tx(3, 100));
        let mut pool: VecDeque<Tx> =
            [in_block.clone(), expiring.clone(), last_chance.clone(), lasting.clone()].into_iter().collect();
        let mut pooled: HashSet<TxId> = pool.iter().map(Tx::id).collect();
        let done: HashSet<TxId> = [in_block.id()].into_iter().collect();
        // Block 11 is final: `expiring` (last height 11) can go in no block
        // now; `last_chance` (last height 12) still can.
        prune_pool(&mut pool, &mut pooled, &done, 12);
        assert_eq!(pool.iter().map(Tx::id).collect::<Vec<_>>(), vec![last_chance.id(), lasting.id()]);
        assert_eq!(pooled, [last_chance.id(), lasting.id()].into_iter().collect());
    }

    /// The next [`Out::Ask`] within 5 s: whom, and for which height.
    async fn next_ask(out: &mut mpsc::Receiver<Out>) -> Option<(PeerId, u64)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, out.recv()).await {
                Ok(Some(Out::Ask { peer, height, .. })) => return Some((peer, height)),
                Ok(Some(Out::Publish(_))) => continue,
                _ => return None,
            }
        }
    }

    fn one_producer() -> (Genesis, Keypair) {
        let producer = Keypair::generate_ed25519();
        let genesis = Genesis {
            version: crate::GENESIS_VERSION,
            name: "test".into(),
            time_ms: 0,
            producers: vec![crate::Producer {
                peer: producer.public().to_peer_id().to_string(),
                addr: format!("/ip4/127.0.0.1/tcp/1/p2p/{}", producer.public().to_peer_id()),
                stake: 1,
            }],
            params: crate::Params::default(),
            accounts: Vec::new(),
            admins: Vec::new(),
            admin_threshold: 1,
        };
        (genesis, producer)
    }

    /// One key signing anchors as fast as it likes filled the whole pool:
    /// every other signer's transactions (the SPN's anchors) were refused.
    #[tokio::test]
    async fn one_signer_cannot_fill_the_pool() {
        let (genesis, _) = one_producer();
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _out) = mpsc::channel(1024);
        let (ledger, task) = start(&genesis, dir.path(), Keypair::generate_ed25519(), tx).expect("start");
        let chain = genesis.hash();
        let anchor = |key: &Keypair, n: u32| {
            let mut root = [0u8; 32];
            root[..4].copy_from_slice(&n.to_be_bytes());
            let body = crate::tx::Body::Anchor { kind: crate::tx::AnchorKind::Receipts, root, count: 1, bytes: 1 };
            Tx::sign(key, chain, (0, chain), 100, body).expect("sign")
        };
        let spammer = Keypair::generate_ed25519();
        for n in 0..MAX_POOL_PER_SIGNER as u32 {
            ledger.submit(anchor(&spammer, n)).await.expect("within the signer's share");
        }
        let e = ledger.submit(anchor(&spammer, 100_000)).await.expect_err("past the signer's share");
        assert!(e.to_string().contains("already wait"), "{e}");
        ledger.submit(anchor(&Keypair::generate_ed25519(), 1)).await.expect("another signer's still goes in");
        ledger.stop().await;
        let _ = task.await;
    }

    /// A follower (not a producer) syncs from whoever announced the best
    /// height. A peer announcing u64::MAX that answers with another block
    /// than the one asked for held every sync on itself: no honest
    /// announcement (lower than u64::MAX) ever took its place.
    #[tokio::test]
    async fn a_peer_announcing_max_height_and_answering_another_block_cannot_pin_sync() {
        let (genesis, producer) = one_producer();
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut out) = mpsc::channel(64);
        let (ledger, task) = start(&genesis, dir.path(), Keypair::generate_ed25519(), tx).expect("start");
        let status = |height| Message::Status { height, hash: Hash([7; 32]) }.encode();
        let (liar, honest) = (PeerId::random(), PeerId::random());

        ledger.gossip(liar, status(u64::MAX)).await;
        assert_eq!(next_ask(&mut out).await, Some((liar, 1)), "the best announcement is followed");
        // Its answer: a block of another height, well formed.
        let other = Block {
            chain: genesis.hash(),
            height: 7,
            parent: Hash([9; 32]),
            time_ms: 77,
            proposer: producer.public().to_peer_id(),
            next_set: Hash([8; 32]),
            txs: Vec::new(),
        };
        let mut c = Vec::new();
        c.extend_from_slice(&7u64.to_be_bytes());
        c.extend_from_slice(&0i64.to_be_bytes());
        c.extend_from_slice(&other.hash().0);
        c.extend_from_slice(&0u32.to_be_bytes());
        ledger.sync_answer(liar, 1, Some(wire::encode_answer(Some((&other.encode(), &c))))).await;
        ledger.gossip(liar, status(u64::MAX)).await;
        ledger.gossip(honest, status(1)).await;
        assert_eq!(next_ask(&mut out).await, Some((honest, 1)), "the honest announcement is followed now");
        ledger.stop().await;
        let _ = task.await;
    }
}
