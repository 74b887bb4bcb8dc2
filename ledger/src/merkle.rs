//! Merkle trees over 32-byte items (transaction ids, receipt hashes), shaped
//! as RFC 6962's: a tree of `n` leaves splits at the largest power of two
//! below `n`; a leaf hashes as `BLAKE3(0x00 | item)`, an inner node as
//! `BLAKE3(0x01 | left | right)`, so a leaf can never pass for a node. The
//! root of no leaves is `BLAKE3("")`.

/// A Merkle path: the siblings from a leaf up, each with whether it sits on the left.
pub type Path = Vec<([u8; 32], bool)>;

/// The root over `items`.
pub fn root(items: &[[u8; 32]]) -> [u8; 32] {
    match items.len() {
        0 => *blake3::hash(b"").as_bytes(),
        1 => leaf(&items[0]),
        n => {
            let k = split(n);
            node(&root(&items[..k]), &root(&items[k..]))
        }
    }
}

/// The path proving `items[index]` is under [`root`]: the siblings from the
/// leaf up, each with whether it sits on the left.
pub fn path(items: &[[u8; 32]], index: usize) -> Path {
    let mut out = Vec::new();
    collect(items, index, &mut out);
    out
}

fn collect(items: &[[u8; 32]], index: usize, out: &mut Vec<([u8; 32], bool)>) {
    if items.len() <= 1 {
        return;
    }
    let k = split(items.len());
    if index < k {
        collect(&items[..k], index, out);
        out.push((root(&items[k..]), false));
    } else {
        collect(&items[k..], index - k, out);
        out.push((root(&items[..k]), true));
    }
}

/// The root that `item` and its `path` lead to.
pub fn climb(item: &[u8; 32], path: &[([u8; 32], bool)]) -> [u8; 32] {
    let mut h = leaf(item);
    for (sibling, left) in path {
        h = if *left { node(sibling, &h) } else { node(&h, sibling) };
    }
    h
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn leaf(item: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(item);
    *h.finalize().as_bytes()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(l);
    h.update(r);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| *blake3::hash(&(i as u64).to_be_bytes()).as_bytes()).collect()
    }

    #[test]
    fn every_leaf_of_every_size_climbs_to_the_root_and_no_other_item_does() {
        for n in 1..40 {
            let it = items(n);
            let r = root(&it);
            for i in 0..n {
                let p = path(&it, i);
                assert_eq!(climb(&it[i], &p), r, "n={n} i={i}");
                let other = if i + 1 < n { it[i + 1] } else { [9; 32] };
                assert_ne!(climb(&other, &p), r, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn an_inner_node_cannot_pass_for_a_leaf() {
        let it = items(4);
        let l = root(&it[..2]);
        // Presenting the left subtree's root as an item with the right root as sibling.
        assert_ne!(climb(&l, &[(root(&it[2..]), false)]), root(&it));
    }
}
