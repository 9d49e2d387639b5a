//! Unified diffs of two DAG versions' YAML, for the DAG page's "compare versions".
//!
//! Lines common to both ends are taken off first; the rest is aligned by a longest common
//! subsequence when it is small enough ([`MAX_CELLS`]), and otherwise shown as all removed
//! then all added (still a correct diff, only not the shortest).

/// Most cells of the alignment table (lines left × lines right after the common ends).
pub const MAX_CELLS: usize = 4_000_000;
/// Unchanged lines shown around each change.
pub const CONTEXT: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// `old` → `new` as a unified diff (`--- from_name`, `+++ to_name`, `@@` hunks); empty when
/// they are equal.
pub fn unified(old: &str, new: &str, from_name: &str, to_name: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = align(&a, &b);
    if ops.iter().all(|(op, _, _)| *op == Op::Same) {
        return String::new();
    }
    let mut out = format!("--- {from_name}\n+++ {to_name}\n");
    // Hunks: runs of changes with up to CONTEXT unchanged lines around, merged when close.
    let changed: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0 != Op::Same).collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut end = changed[i];
        while i + 1 < changed.len() && changed[i + 1] <= end + 2 * CONTEXT + 1 {
            i += 1;
            end = changed[i];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let old_start = hunk.iter().find_map(|(_, x, _)| *x);
        let new_start = hunk.iter().find_map(|(_, _, y)| *y);
        let old_len = hunk.iter().filter(|(op, _, _)| *op != Op::Added).count();
        let new_len = hunk.iter().filter(|(op, _, _)| *op != Op::Removed).count();
        // A side with no line in the hunk names the line before it (as diff does).
        let at = |first: Option<usize>, len: usize, before: usize| match first {
            Some(line) if len > 0 => format!("{},{len}", line + 1),
            _ => format!("{before},0"),
        };
        let old_before = ops[..start]
            .iter()
            .filter(|(op, _, _)| *op != Op::Added)
            .count();
        let new_before = ops[..start]
            .iter()
            .filter(|(op, _, _)| *op != Op::Removed)
            .count();
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            at(old_start, old_len, old_before),
            at(new_start, new_len, new_before)
        ));
        for (op, x, y) in hunk {
            let (mark, line) = match op {
                Op::Same => (' ', a[x.unwrap_or_default()]),
                Op::Removed => ('-', a[x.unwrap_or_default()]),
                Op::Added => ('+', b[y.unwrap_or_default()]),
            };
            out.push(mark);
            out.push_str(line);
            out.push('\n');
        }
        i += 1;
    }
    out
}

/// Each line of the result: what happened to it, its index in `a`, its index in `b`.
fn align(a: &[&str], b: &[&str]) -> Vec<(Op, Option<usize>, Option<usize>)> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<(Op, Option<usize>, Option<usize>)> =
        (0..prefix).map(|i| (Op::Same, Some(i), Some(i))).collect();
    let (n, m) = (mid_a.len(), mid_b.len());
    if n.saturating_mul(m) <= MAX_CELLS && n > 0 && m > 0 {
        // lcs[i][j]: the longest common subsequence of mid_a[i..] and mid_b[j..].
        let width = m + 1;
        let mut lcs = vec![0u32; (n + 1) * width];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * width + j] = if mid_a[i] == mid_b[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && mid_a[i] == mid_b[j] {
                ops.push((Op::Same, Some(prefix + i), Some(prefix + j)));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
                // Removals before additions, as diff writes them.
                ops.push((Op::Removed, Some(prefix + i), None));
                i += 1;
            } else {
                ops.push((Op::Added, None, Some(prefix + j)));
                j += 1;
            }
        }
    } else {
        ops.extend((0..n).map(|i| (Op::Removed, Some(prefix + i), None)));
        ops.extend((0..m).map(|j| (Op::Added, None, Some(prefix + j))));
    }
    let (from_a, from_b) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|k| (Op::Same, Some(from_a + k), Some(from_b + k))));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "v1", "v2"), "");
    }

    #[test]
    fn a_changed_line_with_its_context() {
        let old = "dag: d\ntasks:\n  a:\n    sql: SELECT 1\n  b:\n    shell: echo\n";
        let new =
            "dag: d\ntasks:\n  a:\n    sql: SELECT 2\n  b:\n    shell: echo\n  c:\n    empty: {}\n";
        assert_eq!(
            unified(old, new, "version 1", "version 2"),
            "--- version 1\n+++ version 2\n@@ -1,6 +1,8 @@\n dag: d\n tasks:\n   a:\n\
             -    sql: SELECT 1\n+    sql: SELECT 2\n   b:\n     shell: echo\n+  c:\n+    empty: {}\n"
        );
    }

    #[test]
    fn far_apart_changes_make_two_hunks() {
        let old: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l2\n", "L2\n").replace("l19\n", "");
        assert_eq!(
            unified(&old, &new, "a", "b"),
            "--- a\n+++ b\n@@ -1,5 +1,5 @@\n l1\n-l2\n+L2\n l3\n l4\n l5\n\
             @@ -16,5 +16,4 @@\n l16\n l17\n l18\n-l19\n l20\n"
        );
    }

    #[test]
    fn everything_added_to_an_empty_file() {
        assert_eq!(
            unified("", "x\ny\n", "a", "b"),
            "--- a\n+++ b\n@@ -0,0 +1,2 @@\n+x\n+y\n"
        );
    }
}
