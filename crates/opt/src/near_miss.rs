//! Near misses: parts of an mHC pattern that did not become a fused op,
//! with what was found (as the user's value ids) and the first thing that
//! did not match, in words.
//!
//! After extraction, every residual stream `x [T, n, C]` that has an
//! RMS-normalized projection but feeds no fused pre-mix in the result is
//! explained by the pre-mix matcher's own pieces (`rules/fuse_mhc.rs`),
//! as is every residual mix `M · x + term` left unfused.

use std::collections::{HashMap, HashSet};

use birkhoff_ir::{Graph, Op};
use egg::Id;
use serde::Serialize;

use crate::lang::Inserted;
use crate::rules::{Ctx, fuse_mhc, parents};

/// One near miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    /// The fused op that did not form (`mhc_pre`, `mhc_post`).
    pub op: String,
    /// Where: the value the pattern grows from (the residual stream, or
    /// the post-mix's result), in the input graph.
    pub at: String,
    /// What matched, in words.
    pub found: Vec<String>,
    /// The first thing that did not match, in words.
    pub missing: String,
}

impl std::fmt::Display for NearMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: ", self.op, self.at)?;
        if !self.found.is_empty() {
            write!(f, "{} found; ", self.found.join(", "))?;
        }
        f.write_str(&self.missing)
    }
}

/// The near misses of `original`'s pre- and post-mixes, given the
/// optimized graph and the class of each of its values.
pub(crate) fn near_misses(
    ins: &Inserted,
    original: &Graph,
    optimized: &Graph,
    classes: &[Id],
) -> Vec<NearMiss> {
    let eg = &ins.egraph;
    // The user's value of each class: the first one the input graph has.
    let mut value_of: HashMap<Id, String> = HashMap::new();
    for v in original.values() {
        value_of
            .entry(eg.find(ins.classes[v.index()]))
            .or_insert_with(|| birkhoff_ir::value_name(original, v));
    }
    let name = |c: Id| -> String {
        value_of
            .get(&eg.find(c))
            .cloned()
            .unwrap_or_else(|| "a rewritten value".to_string())
    };
    // What the result fused: the streams of its pre-mixes, its post-mixes.
    let mut fused_streams: HashSet<Id> = HashSet::new();
    let mut fused_posts: HashSet<Id> = HashSet::new();
    for v in optimized.values() {
        let node = optimized.node(v);
        match node.op {
            Op::MhcPre(_) | Op::HcPre { .. } | Op::MhcPreProjected(_) => {
                fused_streams.insert(eg.find(classes[node.args[0].index()]));
            }
            Op::MhcPost => {
                fused_posts.insert(eg.find(classes[v.index()]));
            }
            _ => {}
        }
    }
    let par = parents(eg);
    let ctx = Ctx { eg, parents: &par };
    // Only what the result computes is explained.
    let needed: HashSet<Id> = classes.iter().map(|&c| eg.find(c)).collect();
    // A batched Sinkhorn is only a missed pre-mix next to an RMSNorm (the
    // pre-mix's own); on its own it is just a Sinkhorn.
    let has_rms_norm = eg
        .classes()
        .any(|c| c.nodes.iter().any(|nd| matches!(nd.op, Op::RmsNorm { .. })));
    let mut out = Vec::new();
    let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    ids.sort();
    for c in ids {
        if !needed.contains(&c) {
            continue;
        }
        if !fused_streams.contains(&c)
            && let Some((found, missing)) = fuse_mhc::explain_pre_mix(&ctx, c, &name)
        {
            out.push(NearMiss {
                op: "mhc_pre".into(),
                at: name(c),
                found,
                missing,
            });
        }
        if has_rms_norm
            && let Some((found, missing)) = fuse_mhc::explain_batched_sinkhorn(eg, c, &name)
        {
            out.push(NearMiss {
                op: "mhc_pre".into(),
                at: name(c),
                found,
                missing,
            });
        }
        if !fused_posts.contains(&c)
            && let Some((found, missing)) = fuse_mhc::explain_post_mix(&ctx, c, &name)
        {
            out.push(NearMiss {
                op: "mhc_post".into(),
                at: name(c),
                found,
                missing,
            });
        }
    }
    out
}
