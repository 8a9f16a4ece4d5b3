//! The pool of fixed-size KV blocks: reference counts, a free queue in
//! least-recently-freed order, and the hash → block map of the prefix cache.

use std::collections::{BTreeMap, HashMap};

use hearth_core::{BlockId, TokenId};
use sha2::{Digest, Sha256};

/// Identity of a full block: a hash of its tokens and of every token before
/// it (the parent block's hash), so equal hashes mean equal prefixes.
/// 128 bits of SHA-256: collisions are not a practical concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u8; 16]);

impl BlockHash {
    /// Hash of a block holding `tokens` after the prefix hashed as `parent`.
    #[must_use]
    pub fn of(parent: Option<BlockHash>, tokens: &[TokenId]) -> Self {
        let mut h = Sha256::new();
        h.update(parent.map_or([0; 16], |p| p.0));
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        let digest = h.finalize();
        let mut out = [0; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// The root a sequence's prefix hashes start from when its KV depends
    /// on more than its tokens (a LoRA adapter and its scale): blocks
    /// computed under different roots never match.
    #[must_use]
    pub fn root(tag: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"hearth prefix root");
        h.update(tag);
        let digest = h.finalize();
        let mut out = [0; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }
}

/// All blocks of the cache.
///
/// Free blocks wait in a queue ordered by when they were freed; allocation
/// takes the oldest, and a cached block taken that way leaves the prefix
/// cache (LRU eviction). A cached block found by a prefix lookup is taken
/// out of the queue again without losing its contents.
#[derive(Debug)]
pub struct BlockPool {
    refs: Vec<u32>,
    hash_of: Vec<Option<BlockHash>>,
    /// Free queue: stamp → block; `stamp_of[b]` is `Some` while `b` is queued.
    free: BTreeMap<u64, BlockId>,
    stamp_of: Vec<Option<u64>>,
    next_stamp: u64,
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    /// A pool of `n_blocks` free blocks.
    #[must_use]
    pub fn new(n_blocks: usize) -> Self {
        let mut pool = Self {
            refs: vec![0; n_blocks],
            hash_of: vec![None; n_blocks],
            free: BTreeMap::new(),
            stamp_of: vec![None; n_blocks],
            next_stamp: 0,
            cached: HashMap::new(),
        };
        for b in 0..n_blocks {
            pool.enqueue(BlockId(b as u32));
        }
        pool
    }

    /// Blocks in the pool.
    #[must_use]
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// True for a pool of no blocks.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// Blocks that can be handed out now (free, cached or not).
    #[must_use]
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks currently owned by at least one sequence.
    #[must_use]
    pub fn num_used(&self) -> usize {
        self.len() - self.num_free()
    }

    /// References held on `b`.
    #[must_use]
    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.refs[b.index()]
    }

    /// The cached block holding the prefix `hash`, if any.
    #[must_use]
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Takes `n` blocks, oldest-freed first; `None` (and no change) when
    /// fewer are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free.len() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, b) = self.free.pop_first()?;
            self.stamp_of[b.index()] = None;
            if let Some(h) = self.hash_of[b.index()].take() {
                self.cached.remove(&h);
            }
            self.refs[b.index()] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Adds a reference to `b` (a prefix-cache hit), taking it out of the
    /// free queue if nobody held it.
    pub fn touch(&mut self, b: BlockId) {
        if self.refs[b.index()] == 0 {
            if let Some(stamp) = self.stamp_of[b.index()].take() {
                self.free.remove(&stamp);
            }
        }
        self.refs[b.index()] += 1;
    }

    /// Drops one reference to each of `blocks`, in order; blocks nobody holds
    /// join the free queue, keeping their cached contents until reused.
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let r = &mut self.refs[b.index()];
            debug_assert!(*r > 0, "release of a free block {b:?}");
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.enqueue(b);
            }
        }
    }

    /// Records that owned block `b` now holds the full prefix `hash`. When
    /// another block already holds it, `b` stays uncached (a duplicate).
    pub fn register(&mut self, b: BlockId, hash: BlockHash) {
        if self.hash_of[b.index()].is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.hash_of[b.index()] = Some(hash);
        self.cached.insert(hash, b);
    }

    fn enqueue(&mut self, b: BlockId) {
        self.free.insert(self.next_stamp, b);
        self.stamp_of[b.index()] = Some(self.next_stamp);
        self.next_stamp += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut p = BlockPool::new(3);
        assert!(p.allocate(4).is_none());
        assert_eq!(p.num_free(), 3);
        let got = p.allocate(2).unwrap();
        assert_eq!(got, vec![BlockId(0), BlockId(1)]);
        assert_eq!(p.num_free(), 1);
        p.release(&got);
        assert_eq!(p.num_free(), 3);
    }

    #[test]
    fn cached_blocks_survive_release_until_reused_lru() {
        let mut p = BlockPool::new(2);
        let b = p.allocate(2).unwrap();
        let (h0, h1) = (BlockHash::of(None, &[1, 2]), BlockHash::of(None, &[3, 4]));
        p.register(b[0], h0);
        p.register(b[1], h1);
        p.release(&[b[1], b[0]]); // b1 freed first → evicted first
        assert_eq!(p.lookup(h0), Some(b[0]));
        let again = p.allocate(1).unwrap();
        assert_eq!(again, vec![b[1]]);
        assert_eq!(p.lookup(h1), None, "reuse evicts the cache entry");
        p.touch(b[0]);
        assert_eq!(p.num_free(), 0);
        assert_eq!(p.ref_count(b[0]), 1);
    }

    #[test]
    fn hashes_chain_over_the_prefix() {
        let a = BlockHash::of(None, &[1, 2]);
        assert_ne!(BlockHash::of(Some(a), &[3]), BlockHash::of(None, &[3]));
        assert_eq!(BlockHash::of(Some(a), &[3]), BlockHash::of(Some(BlockHash::of(None, &[1, 2])), &[3]));
    }
}
