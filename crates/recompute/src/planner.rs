//! The general planners: which saved activations of a [`TensorProgram`] to
//! recompute. Brute force (the reference), an exact dynamic program for
//! forward chains, and a greedy heuristic for DAGs; [`plan`] picks one.
//! Every planner judges plans with [`TensorProgram::simulate`] semantics.

use std::collections::HashMap;
use std::fmt;

use crate::program::{RecomputeError, Simulation, Slot, TensorProgram};

/// What a plan optimizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// The smallest peak whose recompute cost is at most `max_cost`
    /// (`None`: no limit); ties go to the cheaper plan.
    MinPeak {
        /// Recompute-cost budget, in the optimizer's cost units.
        max_cost: Option<f64>,
    },
    /// The cheapest plan whose peak is at most `max_peak` bytes; ties go
    /// to the smaller peak. An error if no plan fits.
    MinCost {
        /// Memory budget in bytes.
        max_peak: u64,
    },
}

impl Objective {
    fn check(self) -> Result<(), RecomputeError> {
        match self {
            Objective::MinPeak { max_cost: Some(c) } if !(c.is_finite() && c >= 0.0) => {
                Err(RecomputeError::BadBudget(c))
            }
            _ => Ok(()),
        }
    }

    fn cost_ok(self, cost: f64) -> bool {
        match self {
            Objective::MinPeak { max_cost: Some(c) } => cost <= c,
            _ => true,
        }
    }

    /// The best of `(peak, cost)` pairs under this objective (index), or the
    /// budget error naming the smallest peak.
    fn choose(self, options: &[(u64, f64)]) -> Result<usize, RecomputeError> {
        let key = |&(peak, cost): &(u64, f64)| (peak, cost);
        let best = match self {
            Objective::MinPeak { .. } => options
                .iter()
                .enumerate()
                .filter(|(_, o)| self.cost_ok(o.1))
                .min_by(|a, b| {
                    key(a.1)
                        .partial_cmp(&key(b.1))
                        .unwrap_or(std::cmp::Ordering::Equal)
                }),
            Objective::MinCost { max_peak } => options
                .iter()
                .enumerate()
                .filter(|(_, o)| o.0 <= max_peak)
                .min_by(|a, b| {
                    (a.1.1, a.1.0)
                        .partial_cmp(&(b.1.1, b.1.0))
                        .unwrap_or(std::cmp::Ordering::Equal)
                }),
        };
        match (best, self) {
            (Some((i, _)), _) => Ok(i),
            (None, Objective::MinCost { max_peak }) => Err(RecomputeError::OverBudget {
                budget: max_peak,
                best: options.iter().map(|o| o.0).min().unwrap_or(0),
            }),
            // Keeping everything costs nothing and is always an option.
            (None, Objective::MinPeak { .. }) => Ok(0),
        }
    }
}

/// How a plan was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every subset of candidates (exact; small programs only).
    BruteForce,
    /// The dynamic program over checkpoints of a forward chain (exact).
    ChainDp,
    /// The greedy heuristic for DAGs (feasible, never worse than keeping
    /// everything, not optimal in general).
    Heuristic,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::BruteForce => "brute-force",
            Method::ChainDp => "chain-dp",
            Method::Heuristic => "heuristic",
        })
    }
}

/// A keep/recompute choice for the saved activations of a program, with
/// its predicted peak memory and recompute cost.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneralPlan {
    /// How it was found.
    pub method: Method,
    /// Saved activations to recompute (step indices, increasing).
    pub recompute: Vec<usize>,
    /// Saved activations kept for the backward pass (step indices, increasing).
    pub kept: Vec<usize>,
    /// Predicted peak of live activation bytes under this plan.
    pub peak_bytes: u64,
    /// Peak when everything is kept, for comparison.
    pub keep_all_peak_bytes: u64,
    /// Summed cost of every re-run step (recursive rematerializations included).
    pub recompute_cost: f64,
    /// Printed names of `recompute` and `kept` (`%7` or `step 7`).
    names: HashMap<usize, String>,
}

impl GeneralPlan {
    fn new(
        p: &TensorProgram,
        method: Method,
        mut recompute: Vec<usize>,
        sim: &Simulation,
        keep_all: u64,
    ) -> Self {
        recompute.sort_unstable();
        let kept: Vec<usize> = p
            .saved()
            .into_iter()
            .filter(|s| recompute.binary_search(s).is_err())
            .collect();
        let names = recompute
            .iter()
            .chain(&kept)
            .map(|&s| (s, p.describe(s)))
            .collect();
        GeneralPlan {
            method,
            recompute,
            kept,
            peak_bytes: sim.peak_bytes,
            keep_all_peak_bytes: keep_all,
            recompute_cost: sim.recompute_cost,
            names,
        }
    }

    /// The graph values to recompute, for [`crate::apply`] (empty for
    /// programs not built from a graph).
    pub fn recompute_values(&self, p: &TensorProgram) -> Vec<birkhoff_ir::ValueId> {
        self.recompute
            .iter()
            .filter_map(|&s| p.steps()[s].value)
            .collect()
    }
}

impl fmt::Display for GeneralPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[usize]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.iter()
                    .map(|s| {
                        self.names
                            .get(s)
                            .cloned()
                            .unwrap_or_else(|| format!("step {s}"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(
            f,
            "recompute plan ({}): peak {} B (keep-all {} B), recompute cost {}",
            self.method, self.peak_bytes, self.keep_all_peak_bytes, self.recompute_cost
        )?;
        writeln!(f, "  recompute: {}", list(&self.recompute))?;
        write!(f, "  keep: {}", list(&self.kept))
    }
}

/// Most candidates [`brute_force`] enumerates (2^20 simulations).
pub const MAX_BRUTE_FORCE_CANDIDATES: usize = 20;

/// The optimal plan by trying every subset of candidates.
pub fn brute_force(p: &TensorProgram, objective: Objective) -> Result<GeneralPlan, RecomputeError> {
    objective.check()?;
    let cands = p.candidates();
    if cands.len() > MAX_BRUTE_FORCE_CANDIDATES {
        return Err(RecomputeError::TooManyCandidates {
            candidates: cands.len(),
            max: MAX_BRUTE_FORCE_CANDIDATES,
        });
    }
    let mut options = Vec::new();
    let mut plans = Vec::new();
    for mask in 0u32..(1u32 << cands.len()) {
        let r: Vec<usize> = (0..cands.len())
            .filter(|&j| mask >> j & 1 == 1)
            .map(|j| cands[j])
            .collect();
        // Plans that would re-run a forbidden step are not plans.
        if let Ok(sim) = p.simulate(&r) {
            options.push((sim.peak_bytes, sim.recompute_cost));
            plans.push((r, sim));
        }
    }
    let keep_all = options[0].0;
    let i = objective.choose(&options)?;
    let (r, sim) = &plans[i];
    Ok(GeneralPlan::new(
        p,
        Method::BruteForce,
        r.clone(),
        sim,
        keep_all,
    ))
}

/// Largest number of canonical time slots the chain planner works with
/// (and a quarter of the largest checkpoints × slots table it builds);
/// beyond it [`plan`] uses the heuristic.
pub const MAX_CHAIN_SLOTS: usize = 1 << 18;

/// Most partial plans the chain planner keeps at one checkpoint; beyond it
/// [`plan`] uses the heuristic. Partial plans are few when the backward
/// part reads checkpoints in roughly reverse order (as reverse-mode
/// autodiff does) and can grow exponentially otherwise.
pub const MAX_CHAIN_LABELS: usize = 1024;

/// A segment's contribution: `(first slot, last slot, bytes)` intervals.
type Contribution = Vec<(usize, usize, u64)>;

/// A feasible segment from a checkpoint: the next checkpoint (boundary),
/// its contribution, its recompute cost and the steps it recomputes.
type Segment = (usize, Contribution, f64, Vec<usize>);

/// One partial plan of the chain DP.
struct Label {
    profile: Vec<u64>,
    cost: f64,
    parent: Option<usize>,
    /// The segment that led here: recomputed steps.
    seg: Vec<usize>,
}

/// The optimal plan for a program whose forward part is a chain, by
/// dynamic programming over checkpoints; `None` if the forward part is not
/// a chain or the program is too large ([`MAX_CHAIN_SLOTS`],
/// [`MAX_CHAIN_LABELS`]).
///
/// Why it is exact: with the kept forward values (*checkpoints*) fixed, the
/// simulator's trace splits into segments between consecutive checkpoints
/// `k < k'`. A freed value in a segment is rematerialized from `k` upward
/// and never past another checkpoint, so when and for how long every
/// instance in the segment lives (and how long `k` itself is kept) depends
/// on `k` and `k'` only. On a plan-independent time axis (one slot per
/// forward step, per backward step, and per clone a backward argument could
/// need) the memory curve is a fixed baseline (the backward values) plus
/// one term per segment, and the peak is its maximum.
///
/// For a memory limit `P`, the DP walks checkpoints upward keeping every
/// partial plan that stays within `P` and that no other one dominates (no
/// more cost, no more memory at any slot a later segment can still touch;
/// the other slots are final), and ends with the cheapest plan within `P`,
/// exactly. The cheapest cost is non-increasing in `P`, so a binary search
/// on `P` finds the smallest peak within a cost budget (and, for a memory
/// budget, the smallest peak among the cheapest plans): both objectives,
/// ties included, as [`brute_force`] decides them.
pub fn chain_dp(
    p: &TensorProgram,
    objective: Objective,
) -> Result<Option<GeneralPlan>, RecomputeError> {
    objective.check()?;
    if !p.is_chain() {
        return Ok(None);
    }
    let steps = p.steps();
    let nf = p.forward_len();
    // Canonical slots, in execution order.
    let mut slot: HashMap<Slot, usize> = HashMap::new();
    let push = |s: Slot, slot: &mut HashMap<Slot, usize>| {
        let n = slot.len();
        slot.insert(s, n);
    };
    for i in 0..nf {
        push(Slot::Forward(i), &mut slot);
    }
    for (b, step) in steps.iter().enumerate().skip(nf) {
        for (q, &a) in step.args.iter().enumerate() {
            if a < nf {
                for index in 0..=a {
                    push(
                        Slot::Clone {
                            before: b,
                            arg: q,
                            index,
                        },
                        &mut slot,
                    );
                }
                if slot.len() > MAX_CHAIN_SLOTS {
                    return Ok(None);
                }
            }
        }
        push(Slot::Backward(b), &mut slot);
    }
    push(Slot::End, &mut slot);
    let nslots = slot.len();

    let saved = {
        let mut s = vec![false; nf];
        for i in p.saved() {
            s[i] = true;
        }
        s
    };
    let can_keep: Vec<bool> = (0..nf).map(|i| saved[i] || steps[i].output).collect();
    let forced: Vec<bool> = (0..nf)
        .map(|i| can_keep[i] && (steps[i].output || !steps[i].recomputable))
        .collect();
    // Boundaries: 0 is "below step 0", i + 1 is step i kept, nf + 1 "above the top".
    let nb = nf + 2;
    let is_boundary = |bd: usize| bd == 0 || bd == nb - 1 || can_keep[bd - 1];

    // A step's result lives from its birth to its death, its scratch only
    // at its birth.
    let to_intervals = |inst: &[crate::program::Instance], own: &dyn Fn(usize, bool) -> bool| {
        inst.iter()
            .filter(|x| own(x.step, x.clone))
            .flat_map(|x| {
                let (b, d, s) = (slot[&x.birth], slot[&x.death], &steps[x.step]);
                [(b, d, s.bytes), (b, b, s.scratch)]
            })
            .filter(|&(_, _, bytes)| bytes > 0)
            .collect::<Contribution>()
    };
    // The baseline: backward steps' own instances, the same under every plan.
    let base_trace = p.trace(&[])?;
    let mut base = vec![0u64; nslots];
    for (lo, hi, bytes) in to_intervals(&base_trace, &|s, _| s >= nf) {
        base[lo..=hi]
            .iter_mut()
            .for_each(|m| *m = m.saturating_add(bytes));
    }

    // Every feasible segment (b1, b2): contribution, cost, recomputed steps.
    let mut segs: Vec<Vec<Segment>> = vec![Vec::new(); nb];
    for b1 in (0..nb - 1).filter(|&b| is_boundary(b)) {
        for b2 in b1 + 1..nb {
            if !is_boundary(b2) {
                continue;
            }
            // Steps strictly between the checkpoints: b1..b2-1 in step numbers
            // (boundary b is step b-1).
            let inner = b1..b2 - 1;
            let r: Vec<usize> = inner.clone().filter(|&i| can_keep[i]).collect();
            // A segment that would re-run a forbidden step is no segment.
            if let Ok(inst) = p.trace(&r) {
                let lo = b1.saturating_sub(1);
                let own = |s: usize, clone: bool| {
                    if clone {
                        inner.contains(&s)
                    } else {
                        s >= lo && s < b2 - 1 && s < nf
                    }
                };
                let c = to_intervals(&inst, &own);
                let cost: f64 = inst
                    .iter()
                    .filter(|x| x.clone && inner.contains(&x.step))
                    .map(|x| steps[x.step].cost)
                    .sum();
                segs[b1].push((b2, c, cost, r));
            }
            // A forced checkpoint cannot be skipped: no longer segment from b1.
            if b2 < nb - 1 && forced[b2 - 1] {
                break;
            }
        }
    }

    // The least and most memory every completion from a boundary adds at
    // each slot (`None`: no completion), computed from the top down.
    if nb.saturating_mul(nslots) > MAX_CHAIN_SLOTS * 4 {
        return Ok(None);
    }
    let mut future: Vec<Option<(Vec<u64>, Vec<u64>)>> = vec![None; nb];
    future[nb - 1] = Some((vec![0; nslots], vec![0; nslots]));
    for b1 in (0..nb - 1).rev() {
        let mut acc: Option<(Vec<u64>, Vec<u64>)> = None;
        for (b2, contrib, _, _) in &segs[b1] {
            let Some((lo_f, hi_f)) = &future[*b2] else {
                continue;
            };
            let (mut lo_c, mut hi_c) = (lo_f.clone(), hi_f.clone());
            for &(l, h, bytes) in contrib {
                for t in l..=h {
                    lo_c[t] = lo_c[t].saturating_add(bytes);
                    hi_c[t] = hi_c[t].saturating_add(bytes);
                }
            }
            acc = Some(match acc {
                None => (lo_c, hi_c),
                Some((mut lo_a, mut hi_a)) => {
                    for t in 0..nslots {
                        lo_a[t] = lo_a[t].min(lo_c[t]);
                        hi_a[t] = hi_a[t].max(hi_c[t]);
                    }
                    (lo_a, hi_a)
                }
            });
        }
        future[b1] = acc;
    }
    let dp = ChainDp { base, segs, future };
    let keep_all = p.simulate(&[])?.peak_bytes;
    let finish = |r: Vec<usize>| -> Result<Option<GeneralPlan>, RecomputeError> {
        let sim = p.simulate(&r)?;
        Ok(Some(GeneralPlan::new(
            p,
            Method::ChainDp,
            r,
            &sim,
            keep_all,
        )))
    };
    // The smallest limit in lo..=hi under which `ok` holds of the cheapest
    // plan (monotone: a higher limit only admits more plans).
    let search = |mut lo: u64, mut hi: u64, ok: &dyn Fn(f64) -> bool| -> Result<u64, ()> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match dp.cheapest(mid)? {
                Some((cost, _)) if ok(cost) => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    };
    let result = match objective {
        Objective::MinPeak { .. } => {
            // Keeping everything (cost 0) fits every budget, so the search
            // ends at a feasible limit: the smallest peak within budget.
            search(0, keep_all, &|c| objective.cost_ok(c)).and_then(|peak| dp.cheapest(peak))
        }
        Objective::MinCost { max_peak } => match dp.cheapest(max_peak) {
            Ok(None) => {
                let best = search(max_peak, keep_all, &|_| true);
                return match best {
                    Ok(best) => Err(RecomputeError::OverBudget {
                        budget: max_peak,
                        best,
                    }),
                    Err(()) => Ok(None),
                };
            }
            // Among the cheapest plans, the smallest peak.
            Ok(Some((cost, _))) => {
                search(0, max_peak, &|c| c <= cost).and_then(|peak| dp.cheapest(peak))
            }
            Err(()) => Err(()),
        },
    };
    match result {
        Ok(Some((_, r))) => finish(r),
        // Too many partial plans, or (never for valid programs) no plan.
        Ok(None) | Err(()) => Ok(None),
    }
}

/// The chain DP's precomputed pieces.
struct ChainDp {
    /// The backward steps' memory, the same under every plan.
    base: Vec<u64>,
    /// Per boundary, every feasible segment starting there.
    segs: Vec<Vec<Segment>>,
    /// Per boundary, the least and most memory any completion from it adds
    /// at each slot (`None`: no completion).
    future: Vec<Option<(Vec<u64>, Vec<u64>)>>,
}

impl ChainDp {
    /// The cheapest plan whose memory stays at most `limit` at every slot:
    /// `(cost, recomputed steps)`, `Ok(None)` if there is none, `Err(())`
    /// if there are too many partial plans ([`MAX_CHAIN_LABELS`]).
    ///
    /// A partial plan `A` at a boundary is dropped when every completion
    /// exceeds the limit somewhere (`A + least future > limit` at a slot), or
    /// when another one `B` dominates it: no more cost, and at every slot
    /// either `B` has no more memory than `A` or `B` stays within the limit
    /// whatever the completion adds. Then every completion that keeps `A`
    /// within the limit keeps `B` within it too, at no more cost.
    fn cheapest(&self, limit: u64) -> Result<Option<(f64, Vec<usize>)>, ()> {
        let nb = self.segs.len();
        if self.base.iter().any(|&m| m > limit) {
            return Ok(None);
        }
        let mut arena: Vec<Label> = vec![Label {
            profile: self.base.clone(),
            cost: 0.0,
            parent: None,
            seg: Vec::new(),
        }];
        let mut at: Vec<Vec<usize>> = vec![Vec::new(); nb];
        at[0].push(0);
        for b1 in 0..nb - 1 {
            if at[b1].is_empty() {
                continue;
            }
            let before = at[b1].clone();
            self.prune(&mut at[b1], &arena, b1, limit);
            if at[b1].len() > MAX_CHAIN_LABELS {
                return Err(());
            }
            for l in at[b1].clone() {
                for (b2, contrib, cost, r) in &self.segs[b1] {
                    let mut profile = arena[l].profile.clone();
                    let mut over = false;
                    for &(lo, hi, bytes) in contrib {
                        for m in &mut profile[lo..=hi] {
                            *m = m.saturating_add(bytes);
                            over |= *m > limit;
                        }
                    }
                    if over {
                        continue;
                    }
                    at[*b2].push(arena.len());
                    arena.push(Label {
                        profile,
                        cost: arena[l].cost + cost,
                        parent: Some(l),
                        seg: r.clone(),
                    });
                }
            }
            // Only the parent links of expanded or dropped labels are needed now.
            for l in before {
                arena[l].profile = Vec::new();
            }
        }
        let best = at[nb - 1].iter().copied().min_by(|&a, &b| {
            arena[a]
                .cost
                .partial_cmp(&arena[b].cost)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(best.map(|l| {
            let mut r = Vec::new();
            let mut cur = Some(l);
            while let Some(k) = cur {
                r.extend_from_slice(&arena[k].seg);
                cur = arena[k].parent;
            }
            (arena[l].cost, r)
        }))
    }

    /// Drops the partial plans at boundary `b` that cannot end within
    /// `limit` or that another one dominates (see [`ChainDp::cheapest`]).
    fn prune(&self, labels: &mut Vec<usize>, arena: &[Label], b: usize, limit: u64) {
        let Some((least, most)) = &self.future[b] else {
            labels.clear();
            return;
        };
        labels.retain(|&l| {
            arena[l]
                .profile
                .iter()
                .zip(least)
                .all(|(&m, &f)| m.saturating_add(f) <= limit)
        });
        // Slots where some label could still exceed the limit.
        let open_slots: Vec<usize> = (0..most.len())
            .filter(|&t| {
                labels
                    .iter()
                    .any(|&l| arena[l].profile[t].saturating_add(most[t]) > limit)
            })
            .collect();
        let dominates = |a: usize, b: usize| {
            let (la, lb) = (labels[a], labels[b]);
            arena[la].cost <= arena[lb].cost
                && open_slots.iter().all(|&t| {
                    let m = arena[la].profile[t];
                    m <= arena[lb].profile[t] || m.saturating_add(most[t]) <= limit
                })
        };
        // Cheapest first, then least open memory: a label's dominators
        // come before it.
        let open_sum = |l: usize| -> u128 {
            open_slots
                .iter()
                .map(|&t| u128::from(arena[l].profile[t]))
                .sum()
        };
        let sums: Vec<u128> = labels.iter().map(|&l| open_sum(l)).collect();
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&x, &y| {
            (arena[labels[x]].cost, sums[x])
                .partial_cmp(&(arena[labels[y]].cost, sums[y]))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut kept: Vec<usize> = Vec::new();
        for &j in &order {
            // Of two equal labels the first kept one stays.
            if !kept.iter().any(|&i| dominates(i, j)) {
                kept.push(j);
            }
        }
        kept.sort_unstable();
        *labels = kept.into_iter().map(|i| labels[i]).collect();
    }
}

/// Peak, then the sum of live bytes over the schedule: the greedy
/// heuristic's progress measure.
fn score(p: &TensorProgram, r: &[usize]) -> Option<(Simulation, u128)> {
    let sim = p.simulate(r).ok()?;
    let area = p.live_area(r).ok()?;
    Some((sim, area))
}

/// A plan for any program by greedy search.
///
/// Starting from keeping everything, repeatedly recompute the candidate
/// that lowers the peak most per unit of recompute cost (or, where none
/// lowers it, lowers the summed live bytes most per unit cost, which
/// frees the way for the next step when several values share the peak),
/// among those that keep the plan feasible and within the cost budget;
/// stop when nothing improves (or, for a memory budget, once it is met).
/// Then drop recomputations that the peak does not need, most recent
/// first, to save their cost. Every accepted step is simulated, so the
/// plan is feasible and never has a higher peak than keeping everything.
/// Runs O(candidates²) simulations.
pub fn greedy(p: &TensorProgram, objective: Objective) -> Result<GeneralPlan, RecomputeError> {
    objective.check()?;
    let cands = p.candidates();
    let mut r: Vec<usize> = Vec::new();
    let mut cur = p.simulate(&r)?;
    let mut cur_area = p.live_area(&r)?;
    let keep_all = cur.peak_bytes;
    let met = |sim: &Simulation| match objective {
        Objective::MinCost { max_peak } => sim.peak_bytes <= max_peak,
        Objective::MinPeak { .. } => false,
    };
    while !met(&cur) {
        let mut best: Option<((u8, f64), usize, Simulation, u128)> = None;
        for &c in cands.iter().filter(|c| !r.contains(c)) {
            let mut r2 = r.clone();
            r2.push(c);
            let Some((sim, area)) = score(p, &r2) else {
                continue;
            };
            if !objective.cost_ok(sim.recompute_cost) {
                continue;
            }
            let extra = (sim.recompute_cost - cur.recompute_cost).max(1e-9);
            let key = if sim.peak_bytes < cur.peak_bytes {
                (1, (cur.peak_bytes - sim.peak_bytes) as f64 / extra)
            } else if sim.peak_bytes == cur.peak_bytes && area < cur_area {
                (0, (cur_area - area) as f64 / extra)
            } else {
                continue;
            };
            if best.as_ref().is_none_or(|b| key > b.0) {
                best = Some((key, c, sim, area));
            }
        }
        let Some((_, c, sim, area)) = best else { break };
        r.push(c);
        cur = sim;
        cur_area = area;
    }
    if let Objective::MinCost { max_peak } = objective
        && cur.peak_bytes > max_peak
    {
        return Err(RecomputeError::OverBudget {
            budget: max_peak,
            best: cur.peak_bytes,
        });
    }
    // Drop recomputations the peak does not need.
    let limit = match objective {
        Objective::MinCost { max_peak } => max_peak,
        Objective::MinPeak { .. } => cur.peak_bytes,
    };
    for j in (0..r.len()).rev() {
        let mut r2 = r.clone();
        r2.remove(j);
        if let Ok(sim) = p.simulate(&r2)
            && sim.peak_bytes <= limit
            && sim.recompute_cost <= cur.recompute_cost
        {
            r = r2;
            cur = sim;
        }
    }
    Ok(GeneralPlan::new(p, Method::Heuristic, r, &cur, keep_all))
}

/// The plan for `p` under `objective`: the exact chain DP when the forward
/// part is a chain (and small enough), else the greedy heuristic.
pub fn plan(p: &TensorProgram, objective: Objective) -> Result<GeneralPlan, RecomputeError> {
    match chain_dp(p, objective)? {
        Some(plan) => Ok(plan),
        None => greedy(p, objective),
    }
}
