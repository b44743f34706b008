//! The daily Merkle root over every user account's head (docs/CONTRACT.md §5 "Daily roots"):
//! the leaves, the tree, a leaf's path to the root, and its check.
//!
//! A leaf is SHA-256 of the UTF-8 text `leaf|{user_id}|{kind}|{version}|{balance}|{head_hex}`;
//! a node SHA-256 of the byte 0x01, its left child and its right child (32 bytes each). A node
//! without a right sibling at the end of a level goes up unchanged. The leaves are in account
//! id order. No leaves: the root is 32 zero bytes.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// What one leaf covers: an account's head as it stood when the day's root was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub user_id: i64,
    /// wallet, points, held, packets, merchant
    pub kind: String,
    pub version: i64,
    pub balance: i64,
    pub hash: Hash,
}

pub fn leaf(head: &Head) -> Hash {
    let text = format!(
        "leaf|{}|{}|{}|{}|{}",
        head.user_id,
        head.kind,
        head.version,
        head.balance,
        hex::encode(head.hash)
    );
    Sha256::digest(text.as_bytes()).into()
}

pub fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Every level of the tree over `leaves`, the leaves first and the root (one node) last; a
/// single level of nothing for no leaves.
pub fn levels(leaves: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves];
    while levels.last().is_some_and(|level| level.len() > 1) {
        let below = levels.last().expect("a level");
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(above);
    }
    levels
}

/// The root of a tree built by [`levels`].
pub fn root(levels: &[Vec<Hash>]) -> Hash {
    levels
        .last()
        .and_then(|top| top.first())
        .copied()
        .unwrap_or([0; 32])
}

/// Which side of the path's node a sibling is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// The positions of the siblings on the path from leaf `position` up a tree of `height`
/// levels above `leaves` leaves: `(level, position, side)` for each level whose node has a
/// sibling (a node alone at the end of its level goes up without one).
pub fn sibling_positions(leaves: u64, height: u32, position: u64) -> Vec<(u32, u64, Side)> {
    let mut path = Vec::new();
    let (mut width, mut at) = (leaves, position);
    for level in 0..height {
        let sibling = at ^ 1;
        if sibling < width {
            let side = if sibling < at {
                Side::Left
            } else {
                Side::Right
            };
            path.push((level, sibling, side));
        }
        at /= 2;
        width = width.div_ceil(2);
    }
    path
}

/// Folds a leaf up its path: equal to the day's root when the path proves the leaf.
pub fn fold(leaf: Hash, path: &[(Side, Hash)]) -> Hash {
    path.iter().fold(leaf, |at, (side, sibling)| match side {
        Side::Left => node(sibling, &at),
        Side::Right => node(&at, sibling),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u8) -> Vec<Hash> {
        (0..n).map(|i| Sha256::digest([i]).into()).collect()
    }

    #[test]
    fn every_leaf_of_every_shape_folds_to_the_root() {
        for n in 1..=9u8 {
            let leaves = leaves(n);
            let levels = levels(leaves.clone());
            let root = root(&levels);
            let height = levels.len() as u32 - 1;
            for (position, leaf) in leaves.iter().enumerate() {
                let path: Vec<(Side, Hash)> =
                    sibling_positions(u64::from(n), height, position as u64)
                        .into_iter()
                        .map(|(level, at, side)| (side, levels[level as usize][at as usize]))
                        .collect();
                assert_eq!(fold(*leaf, &path), root, "leaf {position} of {n}");
                let mut wrong = path.clone();
                if let Some(first) = wrong.first_mut() {
                    first.1[0] ^= 1;
                    assert_ne!(fold(*leaf, &wrong), root);
                }
            }
        }
    }

    #[test]
    fn an_odd_node_goes_up_unchanged() {
        let l = leaves(3);
        let levels = levels(l.clone());
        assert_eq!(levels[1], vec![node(&l[0], &l[1]), l[2]]);
        assert_eq!(root(&levels), node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(sibling_positions(3, 2, 2), vec![(1, 0, Side::Left)]);
    }

    #[test]
    fn no_leaves_no_root() {
        assert_eq!(root(&levels(Vec::new())), [0; 32]);
        let one = leaves(1);
        assert_eq!(root(&levels(one.clone())), one[0]);
    }

    #[test]
    fn a_leaf_is_its_text_hashed() {
        let head = Head {
            user_id: 7,
            kind: "wallet".into(),
            version: 3,
            balance: 95,
            hash: [0xab; 32],
        };
        let text = format!("leaf|7|wallet|3|95|{}", "ab".repeat(32));
        assert_eq!(leaf(&head), <Hash>::from(Sha256::digest(text.as_bytes())));
    }
}
