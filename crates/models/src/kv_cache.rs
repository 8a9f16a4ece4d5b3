//! Per-sequence key/value storage for the forward pass.
//!
//! Contiguous per sequence and layer, stored as f16 (llama.cpp's default
//! cache type: half the memory of f32, and the numerics of the reference). The paged, block-table cache of
//! the serving work replaces this type behind the same calls: `prepare` a
//! batch, `write` each layer's K/V, read `spans`, then `commit`.

use std::collections::HashMap;

use half::f16;
use hearth_core::{AttentionSpan, ForwardBatch, SeqId};

use crate::ModelError;

#[derive(Debug, Default)]
struct SeqKv {
    len: usize,
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
}

/// Keys and values of every live sequence.
#[derive(Debug)]
pub struct KvCache {
    n_layer: usize,
    kv_dim: usize,
    max_len: usize,
    seqs: HashMap<SeqId, SeqKv>,
}

impl KvCache {
    /// A cache for a model with `n_layer` layers of `kv_dim` floats per token,
    /// holding at most `max_len` positions per sequence.
    #[must_use]
    pub fn new(n_layer: usize, kv_dim: usize, max_len: usize) -> Self {
        Self { n_layer, kv_dim, max_len, seqs: HashMap::new() }
    }

    /// Positions stored for `seq`.
    #[must_use]
    pub fn seq_len(&self, seq: SeqId) -> usize {
        self.seqs.get(&seq).map_or(0, |s| s.len)
    }

    /// Drops a sequence and its memory.
    pub fn remove(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    /// Forgets positions `len..` of `seq` (rewind for re-evaluation).
    pub fn truncate(&mut self, seq: SeqId, len: usize) {
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.len = s.len.min(len);
        }
    }

    /// Checks that each sequence's rows are contiguous, start at or before
    /// its stored length (earlier means re-evaluating and overwriting) and fit
    /// in `max_len`; then reserves room. Changes nothing on error.
    pub fn prepare(&mut self, batch: &ForwardBatch) -> Result<(), ModelError> {
        if batch.positions.len() != batch.len() || batch.seq_ids.len() != batch.len() {
            return Err(ModelError::BadBatch("tokens, positions and seq_ids differ in length".into()));
        }
        let ends = self.batch_ends(batch)?;
        for (seq, end) in ends {
            let n_layer = self.n_layer;
            let s = self.seqs.entry(seq).or_insert_with(|| SeqKv {
                len: 0,
                keys: vec![Vec::new(); n_layer],
                values: vec![Vec::new(); n_layer],
            });
            for buf in s.keys.iter_mut().chain(s.values.iter_mut()) {
                if buf.len() < end * self.kv_dim {
                    buf.resize(end * self.kv_dim, f16::ZERO);
                }
            }
        }
        Ok(())
    }

    /// One past the last position of each sequence in `batch`, validated.
    fn batch_ends(&self, batch: &ForwardBatch) -> Result<HashMap<SeqId, usize>, ModelError> {
        let mut next: HashMap<SeqId, usize> = HashMap::new();
        for (&seq, &pos) in batch.seq_ids.iter().zip(&batch.positions) {
            let allowed = match next.get(&seq) {
                None => pos <= self.seq_len(seq),
                Some(&n) => pos == n,
            };
            if !allowed {
                return Err(ModelError::BadBatch(format!("sequence {} has a gap before position {pos}", seq.0)));
            }
            if pos >= self.max_len {
                return Err(ModelError::ContextFull { limit: self.max_len });
            }
            next.insert(seq, pos + 1);
        }
        Ok(next)
    }

    /// Stores layer `layer`'s keys and values (`batch.len() × kv_dim` each).
    pub fn write(&mut self, layer: usize, batch: &ForwardBatch, keys: &[f32], values: &[f32]) {
        let d = self.kv_dim;
        for (i, (&seq, &pos)) in batch.seq_ids.iter().zip(&batch.positions).enumerate() {
            let s = self.seqs.get_mut(&seq).expect("prepare() ran first"); // ok: `prepare` created every sequence of the batch

            s.keys[layer][pos * d..(pos + 1) * d]
                .iter_mut()
                .zip(&keys[i * d..(i + 1) * d])
                .for_each(|(o, &v)| *o = f16::from_f32(v));
            s.values[layer][pos * d..(pos + 1) * d]
                .iter_mut()
                .zip(&values[i * d..(i + 1) * d])
                .for_each(|(o, &v)| *o = f16::from_f32(v));
        }
    }

    /// What each row of the batch attends to in layer `layer`: causal, and
    /// limited to the last `window` positions when given.
    #[must_use]
    pub fn spans(&self, layer: usize, batch: &ForwardBatch, window: Option<usize>) -> Vec<AttentionSpan<'_>> {
        batch
            .seq_ids
            .iter()
            .zip(&batch.positions)
            .map(|(seq, &pos)| {
                let s = &self.seqs[seq];
                let end = pos + 1;
                let start = window.map_or(0, |w| end.saturating_sub(w));
                AttentionSpan { keys: &s.keys[layer], values: &s.values[layer], start, end }
            })
            .collect()
    }

    /// Records the new lengths after a successful forward pass: each
    /// sequence now ends where its last row in the batch ends (rows are in
    /// position order, so the last write per sequence wins).
    pub fn commit(&mut self, batch: &ForwardBatch) {
        for (seq, &pos) in batch.seq_ids.iter().zip(&batch.positions) {
            if let Some(s) = self.seqs.get_mut(seq) {
                s.len = pos + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_rejects_gaps_and_overflow_without_changes() {
        let mut kv = KvCache::new(1, 2, 4);
        assert!(kv.prepare(&ForwardBatch::single(SeqId(0), &[1, 2], 1)).is_err());
        assert!(kv.prepare(&ForwardBatch::single(SeqId(0), &[1; 5], 0)).is_err());
        assert_eq!(kv.seq_len(SeqId(0)), 0);
    }

    #[test]
    fn commit_advances_and_rewinds() {
        let mut kv = KvCache::new(1, 2, 8);
        let b = ForwardBatch::single(SeqId(3), &[1, 2, 3], 0);
        kv.prepare(&b).unwrap();
        kv.commit(&b);
        assert_eq!(kv.seq_len(SeqId(3)), 3);
        // Re-evaluating position 1 rewinds the sequence to end there.
        let b = ForwardBatch::single(SeqId(3), &[9], 1);
        kv.prepare(&b).unwrap();
        kv.commit(&b);
        assert_eq!(kv.seq_len(SeqId(3)), 2);
    }
}
