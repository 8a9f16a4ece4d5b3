//! Paged KV-cache bookkeeping (vLLM's `BlockPool` / `KvCacheManager`), pure
//! logic with no tensors: which blocks of the pool each sequence owns, which
//! full blocks hold a known token prefix, and which can be reused.
//!
//! Invariants:
//! - a block is either owned (ref count > 0) or in the free queue, never both;
//! - a block in the prefix cache holds exactly the tokens its hash names and
//!   is never written again (sequences only write past their cached prefix);
//! - every operation that can fail checks first and changes nothing on error.

mod manager;
mod pool;

pub use manager::{KvCacheManager, NoSpace, PrefixHit, PrefixStats};
pub use pool::{BlockHash, BlockPool};
