//! The mixture-of-experts feed-forward block shared by every MoE
//! architecture (Mixtral as `llama`, `qwen2moe`, `qwen3moe`, `deepseek2`).
//!
//! ```text
//! p = gate(router · x [+ b])         softmax or sigmoid over all experts (or the logits)
//! E = top-k(p [+ selection bias])    the k experts of this token, best first
//! w = p[E] [/ Σ p[E]] [· scale]      (gpt-oss: w = softmax(p[E]))
//! y = Σ_{j in order} w_j · expert_{E_j}(x)  [+ shared(x) [· sigmoid(g·x)]]
//! ```
//! (llama.cpp's `build_moe_ffn`; the sum runs in top-k order as there.)
//!
//! Each expert is its own prepared matrix triple, a slice of the file's 3-D
//! `ffn_*_exps` tensors, so a step reads only the experts it routes to. A
//! batch is grouped by expert: every expert any token chose runs once, as a
//! matmul over all the tokens that chose it (prefill and multi-user decode
//! read each selected expert once per step, not once per token).
//!
//! Routing itself (a softmax and a sort over a few dozen numbers per token)
//! runs on the host: it is tiny next to the matmuls, and the expert choice
//! decides which weights to read at all.

use std::borrow::Cow;

use hearth_core::Activation;
use hearth_gguf::GgufFile;

use crate::layers::{Ctx, GatedMlp};
use crate::weights::{Matrix, WeightLoader};
use crate::{ModelConfig, ModelError};

/// More experts than any published model has (llama.cpp's limit is 512);
/// bounds what a hostile file can make us allocate per token.
const MAX_EXPERTS: usize = 512;

/// How router logits become expert probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts (Mixtral, Qwen, DeepSeek V2).
    Softmax,
    /// Independent sigmoids (DeepSeek V3).
    Sigmoid,
    /// Top-k of the raw logits, then a softmax over the k chosen (gpt-oss;
    /// llama.cpp's `SOFTMAX_WEIGHT`).
    SoftmaxWeight,
}

/// Expert counts and routing rules of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Experts per MoE layer.
    pub n_expert: usize,
    /// Experts each token uses.
    pub n_expert_used: usize,
    /// Inner size of one expert.
    pub n_ff_exp: usize,
    /// Router probability function.
    pub gating: Gating,
    /// Renormalize the chosen experts' weights to sum to one.
    pub norm_weights: bool,
    /// Multiplier on the weights (`expert_weights_scale`), where not 0 or 1.
    pub weights_scale: Option<f32>,
    /// Inner size of the shared experts together, where the model has them:
    /// `expert_shared_count × n_ff_exp` (DeepSeek) or
    /// `expert_shared_feed_forward_length` (Qwen2-MoE), else `n_ff`.
    pub n_ff_shared: usize,
    /// The experts' gating activation (SiLU; gpt-oss's clamped SwiGLU).
    pub activation: Activation,
}

impl MoeConfig {
    /// Reads `{arch}.expert_*` metadata; `None` when the model has no experts.
    /// `norm_weights` and `gating` are the architecture's defaults, which
    /// `expert_weights_norm` / `expert_gating_func` override when present.
    pub fn from_gguf(
        file: &GgufFile,
        cfg: &ModelConfig,
        norm_weights: bool,
        gating: Gating,
    ) -> Result<Option<Self>, ModelError> {
        let key = |k: &str| format!("{}.{k}", cfg.arch);
        let opt_usize = |k: &str| file.get(&key(k)).and_then(hearth_gguf::MetaValue::as_u64).map(|v| v as usize);
        let n_expert = opt_usize("expert_count").unwrap_or(0);
        if n_expert == 0 {
            return Ok(None);
        }
        let n_expert_used = opt_usize("expert_used_count").unwrap_or(0);
        if n_expert > MAX_EXPERTS || n_expert_used == 0 || n_expert_used > n_expert {
            return Err(ModelError::BadMetadata(format!(
                "expert_count {n_expert} / expert_used_count {n_expert_used}: need 1 ≤ used ≤ count ≤ {MAX_EXPERTS}"
            )));
        }
        let n_ff_exp = match opt_usize("expert_feed_forward_length") {
            Some(n) if n > 0 => n,
            // llama.cpp's fallback, and Mixtral's convention (experts of size n_ff).
            _ if cfg.arch == "llama" => cfg.n_ff,
            _ => cfg.n_ff / n_expert_used,
        };
        if n_ff_exp == 0 {
            return Err(ModelError::BadMetadata("expert feed-forward length is zero".into()));
        }
        let gating = match file.get(&key("expert_gating_func")).and_then(hearth_gguf::MetaValue::as_u64) {
            None | Some(0) => gating,
            Some(1) => Gating::Softmax,
            Some(2) => Gating::Sigmoid,
            Some(3) => Gating::SoftmaxWeight,
            Some(other) => return Err(ModelError::BadMetadata(format!("expert_gating_func {other} is not supported"))),
        };
        let norm_weights =
            file.get(&key("expert_weights_norm")).and_then(hearth_gguf::MetaValue::as_bool).unwrap_or(norm_weights);
        let weights_scale = file
            .get(&key("expert_weights_scale"))
            .and_then(hearth_gguf::MetaValue::as_f64)
            .map(|v| v as f32)
            // llama.cpp skips 0 (unset) and 1 alike.
            .filter(|&s| s != 0.0 && (s - 1.0).abs() > f32::EPSILON);
        let n_ff_shared = match (opt_usize("expert_shared_count"), opt_usize("expert_shared_feed_forward_length")) {
            (Some(count), _) if count > 0 => count.saturating_mul(n_ff_exp),
            (_, Some(n)) if n > 0 => n,
            _ => cfg.n_ff,
        };
        Ok(Some(Self {
            n_expert,
            n_expert_used,
            n_ff_exp,
            gating,
            norm_weights,
            weights_scale,
            n_ff_shared,
            activation: Activation::Silu,
        }))
    }

    /// The experts of one token and their weights, best first, from its gate
    /// probabilities ([`MoeConfig::gate`] of its router logits). `bias`
    /// (DeepSeek V3's `exp_probs_b`) shifts only the choice, not the weights.
    #[must_use]
    pub fn route(&self, probs: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let score = |e: usize| probs[e] + bias.map_or(0.0, |b| b[e]);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        // Stable, so ties keep the lower expert id: deterministic choices.
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        let mut chosen: Vec<(usize, f32)> = order[..self.n_expert_used].iter().map(|&e| (e, probs[e])).collect();
        // SoftmaxWeight's softmax comes first (`MoeFfn::forward`, through the backend).
        if self.gating != Gating::SoftmaxWeight {
            self.finish_weights(&mut chosen);
        }
        chosen
    }

    /// The last steps on a token's chosen weights: renormalized to sum to
    /// one, then scaled, where the model asks.
    fn finish_weights(&self, chosen: &mut [(usize, f32)]) {
        if self.norm_weights {
            // ggml's `sum_rows` (in f64, then f32); llama.cpp clamps the sum to f16's smallest normal.
            let sum = (chosen.iter().map(|c| f64::from(c.1)).sum::<f64>() as f32).max(6.103_515_6e-5);
            chosen.iter_mut().for_each(|c| c.1 /= sum);
        }
        if let Some(scale) = self.weights_scale {
            chosen.iter_mut().for_each(|c| c.1 *= scale);
        }
    }
}

impl MoeConfig {
    /// Router logits (`n × n_expert`) to gate probabilities in place:
    /// softmax (through the backend, in its float order) or sigmoid.
    pub fn gate(&self, backend: &dyn hearth_core::Backend, logits: &mut [f32]) {
        match self.gating {
            Gating::Softmax => backend.softmax_rows(logits, self.n_expert),
            Gating::Sigmoid => logits.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            // The weights come from the chosen logits (`MoeFfn::forward`).
            Gating::SoftmaxWeight => {}
        }
    }
}

/// Experts that every token runs besides its routed ones.
pub struct SharedExpert {
    mlp: GatedMlp,
    /// Qwen2-MoE scales the shared output by `sigmoid(gate · x)` per token.
    gate: Option<Vec<f32>>,
}

impl SharedExpert {
    /// Loads `blk.{il}.ffn_{gate,up,down}_shexp` and the optional
    /// `ffn_gate_inp_shexp` gate vector; `None` when the layer has none.
    pub fn load(
        w: &WeightLoader<'_>,
        cfg: &ModelConfig,
        moe: &MoeConfig,
        il: usize,
    ) -> Result<Option<Self>, ModelError> {
        let p = |s: &str| format!("blk.{il}.{s}");
        if !w.has(&p("ffn_up_shexp.weight")) {
            return Ok(None);
        }
        Ok(Some(Self {
            mlp: GatedMlp::load_named(w, &p("ffn_{}_shexp.weight"), moe.n_ff_shared, cfg.n_embd, Activation::Silu)?,
            gate: w.optional_vector(&p("ffn_gate_inp_shexp.weight"), cfg.n_embd)?,
        }))
    }

    /// Adds the shared experts' output `y` for input `x` (both `n × n_embd`) to `out`.
    fn add_to(&self, x: &[f32], y: &[f32], out: &mut [f32]) {
        let n_embd = self.mlp.n_embd();
        for ((o, y), x) in out.chunks_exact_mut(n_embd).zip(y.chunks_exact(n_embd)).zip(x.chunks_exact(n_embd)) {
            let g = self.gate.as_ref().map_or(1.0, |g| {
                let logit: f32 = g.iter().zip(x).map(|(a, b)| a * b).sum();
                1.0 / (1.0 + (-logit).exp())
            });
            o.iter_mut().zip(y).for_each(|(o, y)| *o += y * g);
        }
    }
}

/// A mixture-of-experts FFN: router, experts, optional shared experts.
pub struct MoeFfn {
    cfg: MoeConfig,
    router: Matrix,
    /// Added to the router logits (gpt-oss's `ffn_gate_inp.bias`).
    router_bias: Option<Vec<f32>>,
    /// Selection bias per expert (`exp_probs_b`, DeepSeek V3).
    selection_bias: Option<Vec<f32>>,
    experts: Vec<GatedMlp>,
    shared: Option<SharedExpert>,
}

impl MoeFfn {
    /// Loads `blk.{il}.ffn_gate_inp`, `ffn_{gate,up,down}_exps` and the
    /// shared experts, if the layer has them.
    pub fn load(w: &WeightLoader<'_>, cfg: &ModelConfig, moe: &MoeConfig, il: usize) -> Result<Self, ModelError> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (n_embd, n_ff) = (cfg.n_embd, moe.n_ff_exp);
        let load = |part: &str, rows, cols| w.experts(&p(&format!("ffn_{part}_exps.weight")), moe.n_expert, rows, cols);
        // Per-expert output biases (gpt-oss): one row per expert.
        let biases = if w.has(&p("ffn_up_exps.bias")) {
            let table = |part: &str, len| w.table(&p(&format!("ffn_{part}_exps.bias")), moe.n_expert, len);
            let (g, u, d) = (table("gate", n_ff)?, table("up", n_ff)?, table("down", n_embd)?);
            let row = |t: &[f32], e: usize, len: usize| t[e * len..(e + 1) * len].to_vec();
            Some((0..moe.n_expert).map(|e| [row(&g, e, n_ff), row(&u, e, n_ff), row(&d, e, n_embd)]).collect::<Vec<_>>())
        } else {
            None
        };
        let experts = load("gate", n_ff, n_embd)?
            .into_iter()
            .zip(load("up", n_ff, n_embd)?)
            .zip(load("down", n_embd, n_ff)?)
            .enumerate()
            .map(|(e, ((gate, up), down))| {
                let mlp = GatedMlp::new(gate, up, down, moe.activation);
                match &biases {
                    Some(b) => mlp.with_biases(b[e].clone()),
                    None => mlp,
                }
            })
            .collect();
        Ok(Self {
            cfg: moe.clone(),
            router: w.matrix(&p("ffn_gate_inp.weight"), moe.n_expert, n_embd)?,
            router_bias: w.optional_vector(&p("ffn_gate_inp.bias"), moe.n_expert)?,
            selection_bias: w.optional_vector(&p("exp_probs_b.bias"), moe.n_expert)?,
            experts,
            shared: SharedExpert::load(w, cfg, moe, il)?,
        })
    }

    /// Expert bytes a token does not read, on average: the share of the
    /// experts it is not routed to.
    #[must_use]
    pub fn unrouted_bytes(&self) -> u64 {
        let all: usize = self.experts.iter().map(GatedMlp::bytes).sum();
        let unused = self.cfg.n_expert - self.cfg.n_expert_used;
        (all as u64) * unused as u64 / self.cfg.n_expert as u64
    }

    /// The FFN output (`n × n_embd`) for normalized input `x`.
    pub fn forward(&self, ctx: &Ctx<'_>, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n = ctx.batch.len();
        let n_embd = x.len() / n.max(1);
        let k = self.cfg.n_expert_used;
        let mut probs = ctx.matmul(&self.router, x)?;
        if let Some(b) = &self.router_bias {
            probs.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(p, b)| *p += b));
        }
        self.cfg.gate(ctx.backend, &mut probs);
        let mut routes: Vec<Vec<(usize, f32)>> =
            probs.chunks_exact(self.cfg.n_expert).map(|p| self.cfg.route(p, self.selection_bias.as_deref())).collect();
        if self.cfg.gating == Gating::SoftmaxWeight {
            // A softmax over each token's k chosen logits, in the backend's float order.
            let mut weights: Vec<f32> = routes.iter().flat_map(|r| r.iter().map(|c| c.1)).collect();
            ctx.backend.softmax_rows(&mut weights, k);
            for (route, w) in routes.iter_mut().zip(weights.chunks_exact(k)) {
                route.iter_mut().zip(w).for_each(|(c, w)| c.1 = *w);
                self.cfg.finish_weights(route);
            }
        }

        // Who chose each expert: (token, slot in its top-k).
        let mut chosen_by = vec![Vec::new(); self.cfg.n_expert];
        for (t, route) in routes.iter().enumerate() {
            for (slot, &(e, _)) in route.iter().enumerate() {
                chosen_by[e].push((t, slot));
            }
        }
        // Each used expert once, over all its tokens, and the shared experts
        // over every token: one backend step for all gate/up products, one
        // for all down products.
        let used: Vec<(&GatedMlp, &Vec<(usize, usize)>)> =
            self.experts.iter().zip(&chosen_by).filter(|(_, u)| !u.is_empty()).collect();
        let inputs: Vec<Cow<'_, [f32]>> = used
            .iter()
            .map(|(_, users)| {
                if users.len() == n && users.iter().enumerate().all(|(i, &(t, _))| i == t) {
                    // Every token, in order (always so at single-token decode).
                    Cow::Borrowed(x)
                } else {
                    let mut xe = Vec::with_capacity(users.len() * n_embd);
                    for &(t, _) in *users {
                        xe.extend_from_slice(&x[t * n_embd..(t + 1) * n_embd]);
                    }
                    Cow::Owned(xe)
                }
            })
            .collect();
        let mut mlps: Vec<(&GatedMlp, &[f32], usize)> =
            used.iter().zip(&inputs).map(|((mlp, users), xe)| (*mlp, &xe[..], users.len())).collect();
        if let Some(shared) = &self.shared {
            mlps.push((&shared.mlp, x, n));
        }
        let mut outputs = GatedMlp::forward_many(ctx, &mlps)?;
        let shared_out = if self.shared.is_some() { outputs.pop() } else { None };
        let mut by_slot = vec![0.0; n * k * n_embd];
        for ((_, users), y) in used.iter().zip(&outputs) {
            for (&(t, slot), row) in users.iter().zip(y.chunks_exact(n_embd)) {
                let at = (t * k + slot) * n_embd;
                by_slot[at..at + n_embd].copy_from_slice(row);
            }
        }
        // Weighted sum in top-k order (llama.cpp's float order).
        let mut out = vec![0.0; n * n_embd];
        for (t, route) in routes.iter().enumerate() {
            let o = &mut out[t * n_embd..(t + 1) * n_embd];
            for (slot, &(_, weight)) in route.iter().enumerate() {
                let at = (t * k + slot) * n_embd;
                let y = &by_slot[at..at + n_embd];
                if slot == 0 {
                    o.iter_mut().zip(y).for_each(|(o, y)| *o = y * weight);
                } else {
                    o.iter_mut().zip(y).for_each(|(o, y)| *o += y * weight);
                }
            }
        }
        if let (Some(shared), Some(y)) = (&self.shared, shared_out) {
            shared.add_to(x, &y, &mut out);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(gating: Gating, norm_weights: bool, weights_scale: Option<f32>) -> MoeConfig {
        MoeConfig {
            n_expert: 4,
            n_expert_used: 2,
            n_ff_exp: 8,
            gating,
            norm_weights,
            weights_scale,
            n_ff_shared: 0,
            activation: Activation::Silu,
        }
    }

    fn probs(c: &MoeConfig, logits: &[f32]) -> Vec<f32> {
        let mut p = logits.to_vec();
        c.gate(&hearth_cpu::CpuBackend::new(hearth_cpu::CpuOptions::default()).expect("backend"), &mut p);
        p
    }

    #[test]
    fn softmax_routing_picks_the_best_experts_in_order() {
        let c = cfg(Gating::Softmax, false, None);
        let p = probs(&c, &[0.0, 2.0, 1.0, -1.0]);
        let r = c.route(&p, None);
        assert_eq!(r.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2]);
        assert!((r[0].1 - p[1]).abs() < 1e-7 && (r[1].1 - p[2]).abs() < 1e-7);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn normalized_and_scaled_weights() {
        let c = cfg(Gating::Softmax, true, Some(2.5));
        let r = c.route(&probs(&c, &[0.0, 2.0, 1.0, -1.0]), None);
        assert!((r[0].1 + r[1].1 - 2.5).abs() < 1e-6);
    }

    #[test]
    fn selection_bias_changes_the_choice_but_not_the_weights() {
        let c = cfg(Gating::Sigmoid, false, None);
        let logits = probs(&c, &[0.0, 2.0, 1.0, -1.0]);
        let r = c.route(&logits, Some(&[0.0, 0.0, 0.0, 5.0]));
        assert_eq!(r[0].0, 3);
        assert!((r[0].1 - 1.0 / (1.0 + 1f32.exp())).abs() < 1e-7);
    }
}
