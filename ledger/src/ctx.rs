//! The types Malachite's consensus core runs over: addresses are libp2p
//! peer ids (ed25519, key inline: no second id type), values are whole
//! blocks named by their hash (`ValuePayload::ProposalOnly`: a proposal
//! carries its block), signatures are ed25519 by the node's own key.
//!
//! Signed bytes (the chain is the genesis hash, so a vote or proposal for
//! one chain is worthless on another; the set is the hash of the height's
//! producer set, so a vote signed before a recovery changed the set can
//! never conflict with one signed after it):
//!
//! ```text
//! vote:     "ionshard ledger vote v1" | chain: 32 | set: 32 | type: u8 (1 prevote, 2 precommit)
//!           | height: u64 | round: i64 | nil: u8 (1 nil, 0 value) | hash: 32 (zeros if nil)
//!           | validator: bytes(64)
//! proposal: "ionshard ledger proposal v1" | chain: 32 | set: 32 | height: u64 | round: i64
//!           | pol_round: i64 | block hash: 32 | proposer: bytes(64)
//! ```

use libp2p_identity::{Keypair, PeerId, PublicKey};
use malachite_types::{
    Context, LinearTimeouts, NilOrVal, Round, SignedExtension, SigningScheme, VoteType, VotingPower,
};

use crate::block::{Block, Hash};
use crate::codec::Writer;

const VOTE_DOMAIN: &[u8] = b"ionshard ledger vote v1";
const PROPOSAL_DOMAIN: &[u8] = b"ionshard ledger proposal v1";

/// The context Malachite's core is instantiated with: the chain it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The genesis hash.
    pub chain: Hash,
}

/// A producer's address: its libp2p peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub PeerId);

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl malachite_types::Address for Address {}

/// A block height.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl std::fmt::Display for Height {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl malachite_types::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);
    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

impl malachite_types::Value for Block {
    type Id = Hash;
    fn id(&self) -> Hash {
        self.hash()
    }
}

/// A prevote or precommit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteType,
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<Hash>,
    /// Who votes.
    pub validator: Address,
}

impl Vote {
    /// The bytes a vote's signature covers on chain `chain` under the producer set `set` (its hash).
    pub fn signed_bytes(&self, chain: Hash, set: Hash) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(VOTE_DOMAIN).raw(&chain.0).raw(&set.0);
        w.u8(match self.kind {
            VoteType::Prevote => 1,
            VoteType::Precommit => 2,
        });
        w.u64(self.height.0).i64(self.round.as_i64());
        put_value(&mut w, &self.value);
        w.bytes(&self.validator.0.to_bytes());
        w.finish()
    }
}

/// A vote's value as both its signed bytes and the wire carry it: nil
/// flag (1 nil, 0 value) and the hash (zeros for nil).
pub(crate) fn put_value(w: &mut Writer, value: &NilOrVal<Hash>) {
    match value {
        NilOrVal::Nil => w.u8(1).raw(&[0; 32]),
        NilOrVal::Val(h) => w.u8(0).raw(&h.0),
    };
}

impl malachite_types::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<Hash> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<Hash> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.kind
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<Ctx>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<Ctx>> {
        None
    }
    fn extend(self, _extension: SignedExtension<Ctx>) -> Self {
        self
    }
}

/// A proposal: the block for a height and round, from that round's proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The block.
    pub block: Block,
    /// The round of the proof of lock it re-proposes under, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl Proposal {
    /// The bytes a proposal's signature covers on chain `chain` under the producer set `set` (its hash).
    pub fn signed_bytes(&self, chain: Hash, set: Hash) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(PROPOSAL_DOMAIN).raw(&chain.0).raw(&set.0).u64(self.height.0).i64(self.round.as_i64());
        w.i64(self.pol_round.as_i64()).raw(&self.block.hash().0).bytes(&self.proposer.0.to_bytes());
        w.finish()
    }
}

impl malachite_types::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Block {
        &self.block
    }
    fn take_value(self) -> Block {
        self.block
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Proposals travel whole: there are no parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPart {}

impl malachite_types::ProposalPart<Ctx> for NoPart {
    fn is_first(&self) -> bool {
        match *self {}
    }
    fn is_last(&self) -> bool {
        match *self {}
    }
}

/// A producer in the validator set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// Its address.
    pub address: Address,
    /// Its public key (the one inline in its peer id).
    pub key: PublicKey,
    /// Its voting power.
    pub power: VotingPower,
}

impl malachite_types::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &PublicKey {
        &self.key
    }
    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// The producers for one height, with the seed their proposer order is
/// shuffled by (the hash of the block before that height).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    /// The shuffle's seed: the last finalized block's hash.
    pub seed: Hash,
}

impl ValidatorSet {
    /// A set, sorted as Malachite requires (power descending, then address).
    pub fn new(mut validators: Vec<Validator>, seed: Hash) -> Self {
        validators.sort_by(|a, b| b.power.cmp(&a.power).then(a.address.cmp(&b.address)));
        validators.dedup_by(|a, b| a.address == b.address);
        ValidatorSet { validators, seed }
    }
    /// The validators, in the set's order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
    /// The set's hash ([`crate::set_hash`] of its producers): what votes and proposals are signed under.
    pub fn hash(&self) -> Hash {
        let peers: Vec<PeerId> = self.validators.iter().map(|v| v.address.0).collect();
        crate::state::set_hash(&peers)
    }
    /// The proposer order for `height`: a Fisher-Yates shuffle of the set
    /// driven by BLAKE3's output stream keyed by the seed and the height
    /// (never a clock); round `r` is proposed by entry `r mod n`.
    pub fn order(&self, height: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.validators.len()).collect();
        let mut h = blake3::Hasher::new();
        h.update(b"ionshard ledger proposer order v1");
        h.update(&self.seed.0);
        h.update(&height.to_be_bytes());
        let mut xof = h.finalize_xof();
        for i in (1..order.len()).rev() {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            // The bias of a 64-bit draw modulo a few dozen is below 2^-58.
            let j = (u64::from_be_bytes(b) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }
}

impl malachite_types::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.validators.iter().map(|v| v.power).sum()
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators.iter().find(|v| &v.address == address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// ed25519 signatures by libp2p keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519;

/// A signature's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signature(pub Vec<u8>);

impl SigningScheme for Ed25519 {
    type DecodingError = String;
    type Signature = Signature;
    type PublicKey = PublicKey;
    type PrivateKey = Keypair;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, String> {
        if bytes.len() == 64 { Ok(Signature(bytes.to_vec())) } else { Err(format!("{} bytes, not 64", bytes.len())) }
    }
    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.clone()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, String> {
        PublicKey::try_decode_protobuf(bytes).map_err(|e| e.to_string())
    }
    fn encode_public_key(public_key: &PublicKey) -> Vec<u8> {
        public_key.encode_protobuf()
    }
}

impl Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = Block;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(&self, set: &'a ValidatorSet, height: Height, round: Round) -> &'a Validator {
        let order = set.order(height.0);
        let r = round.as_u32().unwrap_or(0) as usize;
        // A set is never empty: genesis and every election keep at least one.
        &set.validators[order[r % order.len()]]
    }

    fn new_proposal(&self, height: Height, round: Round, block: Block, pol_round: Round, address: Address) -> Proposal {
        Proposal { height, round, block, pol_round, proposer: address }
    }

    fn new_prevote(&self, height: Height, round: Round, value: NilOrVal<Hash>, address: Address) -> Vote {
        Vote { kind: VoteType::Prevote, height, round, value, validator: address }
    }

    fn new_precommit(&self, height: Height, round: Round, value: NilOrVal<Hash>, address: Address) -> Vote {
        Vote { kind: VoteType::Precommit, height, round, value, validator: address }
    }
}

/// The validator behind a peer id whose key is inline (ed25519), with `power`.
pub fn validator(peer: PeerId, power: VotingPower) -> Option<Validator> {
    let key = proto::public_key_of(&peer).ok()?;
    Some(Validator { address: Address(peer), key, power })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, seed: u8) -> ValidatorSet {
        let vs = (0..n).filter_map(|_| validator(Keypair::generate_ed25519().public().to_peer_id(), 1)).collect();
        ValidatorSet::new(vs, Hash([seed; 32]))
    }

    #[test]
    fn the_proposer_order_is_a_permutation_that_the_seed_and_height_change() {
        let s = set(21, 1);
        let o = s.order(5);
        let mut sorted = o.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..21).collect::<Vec<_>>());
        assert_eq!(o, s.order(5), "deterministic");
        assert_ne!(o, s.order(6), "another height, another order");
        let mut other = s.clone();
        other.seed = Hash([2; 32]);
        assert_ne!(o, other.order(5), "another seed, another order");
    }

    #[test]
    fn every_producer_proposes_about_as_often() {
        let s = set(4, 3);
        let mut counts = [0u32; 4];
        for h in 0..4000 {
            counts[s.order(h)[0]] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
