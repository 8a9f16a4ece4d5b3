//! The flat batch that a forward pass consumes: tokens from any number of
//! sequences, prefill and decode mixed (vLLM v1 style: one counter per sequence,
//! no separate modes).

use std::collections::HashMap;

use crate::BlockId;

/// A vocabulary index.
pub type TokenId = u32;

/// Identifies one sequence (one conversation / request) inside the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u32);

/// One step's worth of tokens.
///
/// Row `i` is token `tokens[i]` of sequence `seq_ids[i]` at absolute position
/// `positions[i]`. Rows of one sequence must be contiguous and in position
/// order, and each sequence's positions must continue where its KV cache ends.
#[derive(Debug, Clone, Default)]
pub struct ForwardBatch {
    /// Token ids, one per row.
    pub tokens: Vec<TokenId>,
    /// Absolute position of each row in its sequence.
    pub positions: Vec<usize>,
    /// Which sequence each row belongs to.
    pub seq_ids: Vec<SeqId>,
    /// Rows whose logits the caller wants, in increasing order.
    pub logit_rows: Vec<usize>,
    /// Block table of each sequence in the batch: position `p` of a sequence
    /// lives in block `table[p / block_size]` of the KV pool. Tables cover
    /// every position of the batch; shared (prefix-cached) blocks are only read.
    pub block_tables: HashMap<SeqId, Vec<BlockId>>,
}

impl ForwardBatch {
    /// The rows whose logits are wanted, as a batch of their own (logits in
    /// the same order): all a model's last layer needs after attention, as
    /// llama.cpp's graphs prune there (`inp_out_ids`). `None` when every row
    /// is wanted.
    #[must_use]
    pub fn logit_rows_only(&self) -> Option<Self> {
        if self.logit_rows.len() == self.tokens.len() {
            return None;
        }
        let rows = &self.logit_rows;
        Some(Self {
            tokens: rows.iter().map(|&r| self.tokens[r]).collect(),
            positions: rows.iter().map(|&r| self.positions[r]).collect(),
            seq_ids: rows.iter().map(|&r| self.seq_ids[r]).collect(),
            logit_rows: (0..rows.len()).collect(),
            block_tables: rows
                .iter()
                .map(|&r| self.seq_ids[r])
                .filter_map(|s| Some((s, self.block_tables.get(&s)?.clone())))
                .collect(),
        })
    }

    /// A batch holding `tokens` of one sequence starting at `start_pos`, with
    /// logits for the last row only (the common decode / prompt case).
    #[must_use]
    pub fn single(seq: SeqId, tokens: &[TokenId], start_pos: usize) -> Self {
        let n = tokens.len();
        Self {
            tokens: tokens.to_vec(),
            positions: (start_pos..start_pos + n).collect(),
            seq_ids: vec![seq; n],
            logit_rows: n.checked_sub(1).into_iter().collect(),
            block_tables: HashMap::new(),
        }
    }

    /// Sets the block table of `seq`.
    #[must_use]
    pub fn with_blocks(mut self, seq: SeqId, table: Vec<BlockId>) -> Self {
        self.block_tables.insert(seq, table);
        self
    }

    /// Like [`ForwardBatch::single`] but asking logits for every row.
    #[must_use]
    pub fn single_all_logits(seq: SeqId, tokens: &[TokenId], start_pos: usize) -> Self {
        let mut b = Self::single(seq, tokens, start_pos);
        b.logit_rows = (0..tokens.len()).collect();
        b
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the batch has no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
