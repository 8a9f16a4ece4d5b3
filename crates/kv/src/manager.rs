//! Per-sequence block tables over the [`BlockPool`], with prefix caching.

use std::collections::HashMap;

use hearth_core::{BlockId, SeqId, TokenId};

use crate::pool::{BlockHash, BlockPool};

/// The pool cannot supply the blocks asked for; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSpace {
    /// Blocks the request needed.
    pub needed: usize,
    /// Blocks that were free.
    pub free: usize,
}

impl std::error::Error for NoSpace {}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KV cache full: {} blocks needed, {} free", self.needed, self.free)
    }
}

/// Cached full blocks that hold the start of a token sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    /// The blocks, in order.
    pub blocks: Vec<BlockId>,
    /// Their prefix hashes.
    pub hashes: Vec<BlockHash>,
    /// Tokens they cover (`blocks.len() × block_size`).
    pub tokens: usize,
}

/// Prefix-cache counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens looked up when sequences were admitted.
    pub queried_tokens: u64,
    /// Of those, tokens found in the cache.
    pub hit_tokens: u64,
}

#[derive(Debug, Default)]
struct SeqBlocks {
    blocks: Vec<BlockId>,
    /// Prefix hashes of the leading full blocks registered so far.
    hashes: Vec<BlockHash>,
}

/// Block tables of all live sequences.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixStats,
}

impl KvCacheManager {
    /// A manager over `n_blocks` blocks of `block_size` tokens.
    #[must_use]
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self { pool: BlockPool::new(n_blocks), block_size, seqs: HashMap::new(), stats: PrefixStats::default() }
    }

    /// Tokens per block.
    #[must_use]
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The pool (for usage figures).
    #[must_use]
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Prefix-cache counters.
    #[must_use]
    pub fn stats(&self) -> PrefixStats {
        self.stats
    }

    /// Blocks needed to hold `tokens` positions.
    #[must_use]
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// The block table of `seq` (empty when it holds none).
    #[must_use]
    pub fn table(&self, seq: SeqId) -> &[BlockId] {
        self.seqs.get(&seq).map_or(&[], |s| &s.blocks)
    }

    /// The longest run of cached full blocks that starts `tokens` (hashed
    /// from `root`: see [`BlockHash::root`]), leaving at least the last
    /// token to compute (its logits are needed, and a sequence never writes
    /// into a shared block).
    #[must_use]
    pub fn find_prefix(&self, tokens: &[TokenId], root: Option<BlockHash>) -> PrefixHit {
        let max_blocks = tokens.len().saturating_sub(1) / self.block_size;
        let mut hit = PrefixHit::default();
        let mut parent = root;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = BlockHash::of(parent, chunk);
            let Some(b) = self.pool.lookup(hash) else { break };
            hit.blocks.push(b);
            hit.hashes.push(hash);
            parent = Some(hash);
        }
        hit.tokens = hit.blocks.len() * self.block_size;
        hit
    }

    /// Free blocks that growing `seq` to `total_tokens` positions would use
    /// (new blocks, plus `hit` blocks that nobody holds now).
    #[must_use]
    pub fn blocks_needed(&self, seq: SeqId, total_tokens: usize, hit: Option<&PrefixHit>) -> usize {
        let have = self.table(seq).len() + hit.map_or(0, |h| h.blocks.len());
        let fresh = self.blocks_for(total_tokens).saturating_sub(have);
        let revived = hit.map_or(0, |h| h.blocks.iter().filter(|&&b| self.pool.ref_count(b) == 0).count());
        fresh + revived
    }

    /// Grows `seq` (creating it, starting from the cached `hit`) to hold
    /// `total_tokens` positions. Changes nothing on error.
    pub fn allocate(&mut self, seq: SeqId, total_tokens: usize, hit: Option<PrefixHit>) -> Result<(), NoSpace> {
        let needed = self.blocks_needed(seq, total_tokens, hit.as_ref());
        if needed > self.pool.num_free() {
            return Err(NoSpace { needed, free: self.pool.num_free() });
        }
        let want = self.blocks_for(total_tokens);
        let entry = self.seqs.entry(seq).or_default();
        if let Some(hit) = hit {
            if entry.blocks.is_empty() {
                hit.blocks.iter().for_each(|&b| self.pool.touch(b));
                entry.blocks = hit.blocks;
                entry.hashes = hit.hashes;
            }
        }
        let fresh = want.saturating_sub(entry.blocks.len());
        let new = self.pool.allocate(fresh).expect("counted free blocks above"); // ok: `needed` covers `fresh`
        entry.blocks.extend(new);
        Ok(())
    }

    /// Counts an admission's prompt lookup in the hit-rate figures.
    pub fn record_lookup(&mut self, prompt_tokens: usize, hit_tokens: usize) {
        self.stats.queried_tokens += prompt_tokens as u64;
        self.stats.hit_tokens += hit_tokens as u64;
    }

    /// Publishes the full blocks of `seq` among its first `computed`
    /// positions (whose tokens are `tokens[..computed]`, hashed from `root`)
    /// to the prefix cache.
    pub fn cache_computed(&mut self, seq: SeqId, root: Option<BlockHash>, tokens: &[TokenId], computed: usize) {
        let Some(s) = self.seqs.get_mut(&seq) else { return };
        let full = (computed.min(tokens.len()) / self.block_size).min(s.blocks.len());
        while s.hashes.len() < full {
            let i = s.hashes.len();
            let parent = s.hashes.last().copied().or(root);
            let hash = BlockHash::of(parent, &tokens[i * self.block_size..(i + 1) * self.block_size]);
            self.pool.register(s.blocks[i], hash);
            s.hashes.push(hash);
        }
    }

    /// Releases every block of `seq`. Tail blocks are freed first so they
    /// are evicted before the prefix blocks other requests may share.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            let reversed: Vec<BlockId> = s.blocks.into_iter().rev().collect();
            self.pool.release(&reversed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_grows_by_blocks_and_fails_cleanly() {
        let mut m = KvCacheManager::new(4, 4);
        m.allocate(SeqId(1), 5, None).unwrap();
        assert_eq!(m.table(SeqId(1)).len(), 2);
        m.allocate(SeqId(1), 8, None).unwrap();
        assert_eq!(m.table(SeqId(1)).len(), 2);
        let err = m.allocate(SeqId(2), 13, None).unwrap_err();
        assert_eq!(err, NoSpace { needed: 4, free: 2 });
        assert_eq!(m.table(SeqId(2)).len(), 0);
        assert_eq!(m.pool().num_free(), 2);
        m.free(SeqId(1));
        assert_eq!(m.pool().num_free(), 4);
    }

    #[test]
    fn shared_prefix_is_found_and_reference_counted() {
        let mut m = KvCacheManager::new(8, 2);
        let prompt = [1, 2, 3, 4, 5];
        m.allocate(SeqId(1), prompt.len(), None).unwrap();
        m.cache_computed(SeqId(1), None, &prompt, prompt.len());
        let hit = m.find_prefix(&[1, 2, 3, 4, 9, 9], None);
        assert_eq!(hit.tokens, 4);
        assert_eq!(&hit.blocks[..], &m.table(SeqId(1))[..2]);
        m.allocate(SeqId(2), 6, Some(hit)).unwrap();
        assert_eq!(m.pool().ref_count(m.table(SeqId(1))[0]), 2);
        assert_eq!(m.pool().num_used(), 4); // 3 blocks of seq 1, one new for seq 2
        m.free(SeqId(1));
        m.free(SeqId(2));
        assert_eq!(m.pool().num_used(), 0);
        // Still cached after both left; a full-prompt hit keeps the last token to compute.
        assert_eq!(m.find_prefix(&[1, 2, 3, 4], None).tokens, 2);
        assert_eq!(m.find_prefix(&[1, 2, 3, 4, 5], None).tokens, 4);
    }

    #[test]
    fn blocks_under_different_roots_never_match() {
        let mut m = KvCacheManager::new(8, 2);
        let (legal, style) = (Some(BlockHash::root(b"legal")), Some(BlockHash::root(b"style")));
        m.allocate(SeqId(1), 5, None).unwrap();
        m.cache_computed(SeqId(1), legal, &[1, 2, 3, 4, 5], 5);
        assert_eq!(m.find_prefix(&[1, 2, 3, 4, 5], legal).tokens, 4);
        assert_eq!(m.find_prefix(&[1, 2, 3, 4, 5], style).tokens, 0);
        assert_eq!(m.find_prefix(&[1, 2, 3, 4, 5], None).tokens, 0, "the bare base shares nothing with an adapter");
    }

    #[test]
    fn reviving_free_cached_blocks_counts_against_free_space() {
        let mut m = KvCacheManager::new(2, 2);
        m.allocate(SeqId(1), 4, None).unwrap();
        m.cache_computed(SeqId(1), None, &[1, 2, 3, 4], 4);
        m.free(SeqId(1));
        let hit = m.find_prefix(&[1, 2, 3, 4, 5], None);
        assert_eq!(hit.tokens, 4);
        // 2 revived + 1 fresh > 2 free.
        assert_eq!(m.blocks_needed(SeqId(2), 5, Some(&hit)), 3);
        assert!(m.allocate(SeqId(2), 5, Some(hit.clone())).is_err());
        assert_eq!(m.pool().num_free(), 2);
        m.allocate(SeqId(2), 4, Some(hit)).unwrap();
        assert_eq!(m.pool().num_free(), 0);
    }
}
