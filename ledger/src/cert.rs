//! Commit certificates: the precommits of more than 2/3 of a height's
//! voting power for one block. A block is final once it has one; there is
//! no longest-chain rule and no fork to wait out.
//!
//! Bytes:
//!
//! ```text
//! height: u64 | round: i64 | block: 32 | list(MAX_SIGNATURES) of (validator: bytes(64) | signature: bytes(64))
//! ```

use libp2p_identity::PeerId;
use malachite_types::{CommitCertificate, CommitSignature, NilOrVal, Round, VoteType};

use crate::block::Hash;
use crate::codec::{Reader, Writer};
use crate::ctx::{Address, Ctx, Height, Signature, ValidatorSet, Vote};
use crate::error::{Error, Result};

/// Signatures in one certificate, at most (the producer set is far smaller).
pub const MAX_SIGNATURES: usize = 256;

/// A commit certificate for one block.
pub type Certificate = CommitCertificate<Ctx>;

/// The certificate's bytes.
pub fn encode(c: &Certificate) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(c.height.0).i64(c.round.as_i64()).raw(&c.value_id.0).count(c.commit_signatures.len());
    for s in &c.commit_signatures {
        w.bytes(&s.address.0.to_bytes()).bytes(&s.signature.0);
    }
    w.finish()
}

/// Parse a certificate from untrusted bytes (its signatures are checked by [`verify`]).
pub fn decode(bytes: &[u8]) -> Result<Certificate> {
    let mut r = Reader::new(bytes, "commit certificate");
    let height = Height(r.u64()?);
    let round = round_of(r.i64()?).ok_or_else(|| r.malformed("round out of range"))?;
    let value_id = Hash(r.array()?);
    let n = r.count(MAX_SIGNATURES)?;
    let mut commit_signatures = Vec::with_capacity(n);
    for _ in 0..n {
        let peer = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("validator: {e}")))?;
        let sig = r.bytes(64)?.to_vec();
        commit_signatures.push(CommitSignature::new(Address(peer), Signature(sig)));
    }
    r.end()?;
    Ok(CommitCertificate { height, round, value_id, commit_signatures })
}

/// A round number from its wire form (-1 is nil).
pub(crate) fn round_of(v: i64) -> Option<Round> {
    if v == -1 { Some(Round::Nil) } else { u32::try_from(v).ok().map(Round::new) }
}

/// Check `c` against `set` on chain `chain`: every counted signature is a
/// precommit for the block by a member, each member counts once, and they
/// hold more than 2/3 of the set's voting power. Returns the power signed.
pub fn verify(chain: Hash, c: &Certificate, set: &ValidatorSet) -> Result<u64> {
    let total: u64 = set.validators().iter().map(|v| v.power).sum();
    let mut signed = 0u64;
    let mut seen = std::collections::HashSet::new();
    let epoch = set.hash();
    for s in &c.commit_signatures {
        let Some(v) = set.validators().iter().find(|v| v.address == s.address) else {
            continue;
        };
        if !seen.insert(s.address) {
            continue;
        }
        let vote = Vote {
            kind: VoteType::Precommit,
            height: c.height,
            round: c.round,
            value: NilOrVal::Val(c.value_id),
            validator: s.address,
        };
        if v.key.verify(&vote.signed_bytes(chain, epoch), &s.signature.0) {
            signed = signed.saturating_add(v.power);
        }
    }
    if signed.saturating_mul(3) > total.saturating_mul(2) {
        Ok(signed)
    } else {
        Err(Error::WeakCertificate { height: c.height.0, signed, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::validator;
    use libp2p_identity::Keypair;

    fn signed(keys: &[Keypair], chain: Hash, block: Hash, epoch: Hash) -> Certificate {
        let sigs = keys
            .iter()
            .map(|k| {
                let a = Address(k.public().to_peer_id());
                let v = Vote {
                    kind: VoteType::Precommit,
                    height: Height(3),
                    round: Round::new(0),
                    value: NilOrVal::Val(block),
                    validator: a,
                };
                CommitSignature::new(a, Signature(k.sign(&v.signed_bytes(chain, epoch)).expect("sign")))
            })
            .collect();
        CommitCertificate { height: Height(3), round: Round::new(0), value_id: block, commit_signatures: sigs }
    }

    #[test]
    fn a_certificate_needs_more_than_two_thirds_and_counts_each_producer_once() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
        let set = ValidatorSet::new(
            keys.iter().filter_map(|k| validator(k.public().to_peer_id(), 1)).collect(),
            Hash::default(),
        );
        let chain = Hash([5; 32]);
        let block = Hash([6; 32]);
        let c = signed(&keys[..3], chain, block, set.hash());
        assert_eq!(verify(chain, &decode(&encode(&c)).expect("decode"), &set).ok(), Some(3));
        let two = signed(&keys[..2], chain, block, set.hash());
        assert!(matches!(verify(chain, &two, &set), Err(Error::WeakCertificate { signed: 2, .. })));
        let mut doubled = two.clone();
        doubled.commit_signatures.extend(two.commit_signatures.clone());
        assert!(matches!(verify(chain, &doubled, &set), Err(Error::WeakCertificate { .. })));
        // Precommits for this block on another chain, or under another set, are worth nothing here.
        assert!(verify(Hash([7; 32]), &c, &set).is_err());
        let other = signed(&keys[..4], chain, block, Hash([9; 32]));
        assert!(verify(chain, &other, &set).is_err());
    }
}
