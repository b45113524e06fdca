//! Unified diffs of expected and actual output, for failure messages.

/// A unified diff of two line lists, with three lines of context.
pub(crate) fn unified_diff(a: &[&str], b: &[&str], a_name: &str, b_name: &str) -> String {
    const CONTEXT: usize = 3;
    let (n, m) = (a.len(), b.len());
    let mut out = format!("--- {a_name}\n+++ {b_name}\n");
    if n.saturating_mul(m) > 4_000_000 {
        // Too large for the quadratic table: show both whole.
        out.push_str(&format!("@@ -1,{n} +1,{m} @@\n"));
        a.iter().for_each(|l| out.push_str(&format!("-{l}\n")));
        b.iter().for_each(|l| out.push_str(&format!("+{l}\n")));
        return out;
    }
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // The edit script: (tag, line, a index, b index) before the edit.
    let mut ops: Vec<(char, &str, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i], i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i], i, j));
            i += 1;
        } else {
            ops.push(('+', b[j], i, j));
            j += 1;
        }
    }
    let changes: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changes.len() {
        // One hunk: changes closer than two contexts share it.
        let first = changes[k];
        while k + 1 < changes.len() && changes[k + 1] - changes[k] <= 2 * CONTEXT {
            k += 1;
        }
        let last = changes[k];
        k += 1;
        let (lo, hi) = (
            first.saturating_sub(CONTEXT),
            (last + CONTEXT + 1).min(ops.len()),
        );
        let span = &ops[lo..hi];
        let count = |skip: char| span.iter().filter(|o| o.0 != skip).count();
        let start = |count: usize, at: usize| if count == 0 { at } else { at + 1 };
        let (a_count, b_count) = (count('+'), count('-'));
        out.push_str(&format!(
            "@@ -{},{a_count} +{},{b_count} @@\n",
            start(a_count, span[0].2),
            start(b_count, span[0].3)
        ));
        for (tag, line, _, _) in span {
            out.push_str(&format!("{tag}{line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_unified() {
        let a = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut b = a;
        b[1] = "B";
        b[9] = "J";
        let d = unified_diff(&a, &b, "x", "y");
        assert_eq!(
            d,
            "--- x\n+++ y\n@@ -1,5 +1,5 @@\n a\n-b\n+B\n c\n d\n e\n\
             @@ -7,4 +7,4 @@\n g\n h\n i\n-j\n+J\n"
        );
        assert_eq!(
            unified_diff(&[], &["n"], "x", "y"),
            "--- x\n+++ y\n@@ -0,0 +1,1 @@\n+n\n"
        );
    }
}
