//! `Einsum` as permutes, reshapes, sums and batched matrix products.
//!
//! Operands are contracted left to right. For each pair, every letter is
//! a batch letter (in both and needed later), a contracted letter (in
//! both, not needed later), or belongs to one side (summed first if no
//! one needs it). Each side is permuted to `[batch, own, contracted]`,
//! flattened to three axes, multiplied, and unflattened.

use birkhoff_ir::{Op, ValueId};

use crate::import::{Importer, Val};

type R<T> = Result<T, String>;

/// A parsed equation: one label list per operand and the output's.
struct Equation {
    inputs: Vec<Vec<char>>,
    output: Vec<char>,
}

/// The label of the ellipsis axis `i` places from the right: a
/// character no equation can spell (labels are ASCII letters), so the
/// ellipsis of every operand lines up at the right as broadcasting does.
fn ellipsis_label(i: usize) -> char {
    char::from_u32(0x100 + i as u32).unwrap_or('?')
}

/// Parses `eq` for operands of `ranks`; `...` becomes `ellipsis_label`s.
fn parse(eq: &str, ranks: &[usize]) -> R<Equation> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = |why: &str| format!("einsum equation `{eq}` is not supported: {why}");
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(bad(&format!(
            "it names {} operands, the node has {}",
            terms.len(),
            ranks.len()
        )));
    }
    let mut ellipsis_rank = 0usize;
    let mut inputs = Vec::new();
    for (t, &rank) in terms.iter().zip(ranks) {
        let (labels, has_ellipsis) =
            expand_term(t, rank, &mut ellipsis_rank).map_err(|e| bad(&e))?;
        let mut seen = Vec::new();
        for &c in &labels {
            if seen.contains(&c) {
                return Err(bad(&format!(
                    "`{c}` repeats within one operand (a diagonal)"
                )));
            }
            seen.push(c);
        }
        if labels.len() != rank && !has_ellipsis {
            return Err(bad(&format!(
                "`{t}` has {} labels for rank {rank}",
                labels.len()
            )));
        }
        inputs.push(labels);
    }
    let ell: Vec<char> = (0..ellipsis_rank).rev().map(ellipsis_label).collect();
    let output = match rhs {
        Some(r) => {
            let mut out = Vec::new();
            let mut rest = r;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix("...") {
                    out.extend(&ell);
                    rest = after;
                } else {
                    let c = rest.chars().next().unwrap_or(' ');
                    if !c.is_ascii_alphabetic() {
                        return Err(bad(&format!("`{c}` is not a label")));
                    }
                    if out.contains(&c) {
                        return Err(bad(&format!("`{c}` repeats in the output")));
                    }
                    if !inputs.iter().any(|l| l.contains(&c)) {
                        return Err(bad(&format!("output label `{c}` is in no operand")));
                    }
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
            out
        }
        None => {
            // Implicit output: the ellipsis, then letters seen once, sorted.
            let mut once: Vec<char> = Vec::new();
            for c in inputs.iter().flatten().filter(|c| c.is_ascii_alphabetic()) {
                let n = inputs.iter().flatten().filter(|&&d| d == *c).count();
                if n == 1 && !once.contains(c) {
                    once.push(*c);
                }
            }
            once.sort_unstable();
            let mut out = ell;
            out.extend(once);
            out
        }
    };
    Ok(Equation { inputs, output })
}

/// One operand's labels with `...` replaced by digit labels (aligned at
/// the right, as broadcasting aligns).
fn expand_term(
    t: &str,
    rank: usize,
    ellipsis_rank: &mut usize,
) -> Result<(Vec<char>, bool), String> {
    let (pre, post, has) = match t.split_once("...") {
        Some((a, b)) => (a, b, true),
        None => (t, "", false),
    };
    let letters = |s: &str| -> Result<Vec<char>, String> {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    Ok(c)
                } else {
                    Err(format!("`{c}` is not a label"))
                }
            })
            .collect()
    };
    let (pre, post) = (letters(pre)?, letters(post)?);
    if !has {
        return Ok((pre, false));
    }
    let fixed = pre.len() + post.len();
    let k = rank
        .checked_sub(fixed)
        .ok_or_else(|| format!("`{t}` has more labels than its operand's rank {rank}"))?;
    *ellipsis_rank = (*ellipsis_rank).max(k);
    let mut out = pre;
    out.extend((0..k).rev().map(ellipsis_label));
    out.extend(post);
    Ok((out, true))
}

/// Imports `Einsum(eq)` over `args`, all of ONNX type `dtype`.
pub(crate) fn import(imp: &mut Importer, eq: &str, args: &[Val], dtype: i32) -> R<ValueId> {
    let ranks: Vec<usize> = args.iter().map(|a| imp.shape(a).len()).collect();
    let e = parse(eq, &ranks)?;
    let mut sizes: Vec<(char, usize)> = Vec::new();
    let mut ops: Vec<(ValueId, Vec<char>)> = Vec::new();
    for (a, labels) in args.iter().zip(&e.inputs) {
        let shape = imp.shape(a);
        for (&c, &d) in labels.iter().zip(&shape) {
            match sizes.iter().find(|(l, _)| *l == c) {
                Some(&(_, s)) if s != d => {
                    return Err(format!(
                        "einsum label `{c}` has sizes {s} and {d} (broadcasting within einsum is not supported)"
                    ));
                }
                Some(_) => {}
                None => sizes.push((c, d)),
            }
        }
        let id = imp.operand(a, dtype, &shape)?;
        ops.push((id, labels.clone()));
    }
    let size = |c: char| sizes.iter().find(|(l, _)| *l == c).map_or(1, |&(_, s)| s);
    let mut rest = ops.into_iter();
    let (mut acc, mut acc_labels) = rest.next().ok_or("Einsum needs an operand")?;
    let later: Vec<Vec<char>> = e.inputs[1..].to_vec();
    for (step, (id, labels)) in rest.enumerate() {
        let needed: Vec<char> = e
            .output
            .iter()
            .chain(later[step + 1..].iter().flatten())
            .copied()
            .collect();
        let (a, al) = sum_unneeded(imp, acc, &acc_labels, &labels, &needed)?;
        let (b, bl) = sum_unneeded(imp, id, &labels, &al, &needed)?;
        let batch: Vec<char> = al
            .iter()
            .copied()
            .filter(|c| bl.contains(c) && needed.contains(c))
            .collect();
        let contract: Vec<char> = al
            .iter()
            .copied()
            .filter(|c| bl.contains(c) && !needed.contains(c))
            .collect();
        let own_a: Vec<char> = al.iter().copied().filter(|c| !bl.contains(c)).collect();
        let own_b: Vec<char> = bl.iter().copied().filter(|c| !al.contains(c)).collect();
        let prod = |l: &[char]| l.iter().map(|&c| size(c)).product::<usize>();
        let (bp, mp, kp, np) = (prod(&batch), prod(&own_a), prod(&contract), prod(&own_b));
        let order_a: Vec<char> = batch
            .iter()
            .chain(&own_a)
            .chain(&contract)
            .copied()
            .collect();
        let order_b: Vec<char> = batch
            .iter()
            .chain(&contract)
            .chain(&own_b)
            .copied()
            .collect();
        let a = arrange(imp, a, &al, &order_a)?;
        let b = arrange(imp, b, &bl, &order_b)?;
        let (a, b) = if batch.is_empty() {
            (imp.reshape(a, &[mp, kp])?, imp.reshape(b, &[kp, np])?)
        } else {
            (
                imp.reshape(a, &[bp, mp, kp])?,
                imp.reshape(b, &[bp, kp, np])?,
            )
        };
        let p = imp.add(Op::MatMul, &[a, b])?;
        acc_labels = batch.iter().chain(&own_a).chain(&own_b).copied().collect();
        let shape: Vec<usize> = acc_labels.iter().map(|&c| size(c)).collect();
        acc = imp.reshape(p, &shape)?;
    }
    // Sum what the output drops, then put the axes in its order.
    let (acc, acc_labels) = sum_unneeded(imp, acc, &acc_labels, &[], &e.output)?;
    arrange(imp, acc, &acc_labels, &e.output)
}

/// Sums the axes of `id` whose labels neither `other` has nor `needed`.
fn sum_unneeded(
    imp: &mut Importer,
    id: ValueId,
    labels: &[char],
    other: &[char],
    needed: &[char],
) -> R<(ValueId, Vec<char>)> {
    let drop: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, c)| !other.contains(c) && !needed.contains(c))
        .map(|(i, _)| i)
        .collect();
    if drop.is_empty() {
        return Ok((id, labels.to_vec()));
    }
    let s = imp.add(
        Op::ReduceSum {
            axes: drop.clone(),
            keepdims: false,
        },
        &[id],
    )?;
    let kept = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, &c)| c)
        .collect();
    Ok((s, kept))
}

/// `id` (axes labelled `from`) permuted to the label order `to`.
fn arrange(imp: &mut Importer, id: ValueId, from: &[char], to: &[char]) -> R<ValueId> {
    let perm: Vec<usize> = to
        .iter()
        .map(|c| from.iter().position(|d| d == c).ok_or("einsum label lost"))
        .collect::<Result<_, _>>()?;
    imp.permute(id, &perm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_output_is_sorted_single_letters() {
        let e = parse("ij,jk", &[2, 2]).unwrap();
        assert_eq!(e.output, vec!['i', 'k']);
    }

    #[test]
    fn diagonal_is_refused_with_the_equation() {
        let err = parse("ii->i", &[2]).err().unwrap();
        assert!(err.contains("einsum equation `ii->i`"), "{err}");
        assert!(err.contains("diagonal"), "{err}");
    }

    #[test]
    fn ellipsis_expands_to_the_operand_rank() {
        let e = parse("...ij,...jk->...ik", &[4, 4]).unwrap();
        assert_eq!(e.inputs[0].len(), 4);
        assert_eq!(e.output.len(), 4);
    }
}
