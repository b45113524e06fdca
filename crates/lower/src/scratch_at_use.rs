//! Scratch values computed where they are read.
//!
//! A vector loop that fills a scratch array, `%l[j] = e(j)`, is how
//! lowering names a row of per-token values (the pre-mix's scaled
//! mixes). A backend that unrolls the loop computes every element up
//! front and keeps all of them live until their last read; on the GPU,
//! where the reads sit in one warp's scalar code between the stores that
//! only lane 0 makes, that held the pre-mix's 24 mixes in registers
//! across the whole section, and ptxas spilled to keep the block's
//! occupancy (f32 `hc-pre` at T = 1024, C = 7168). Computing `e(c)` at
//! the read of `%l[c]` keeps one value live at a time.
//!
//! The rewrite is exact (the same operations on the same operands) and
//! only made where it adds no work: each element is read at most once,
//! either at a constant index in straight-line code or at `i + c` in a
//! vector loop over `i`, and nothing `e` reads changes between the fill
//! and the reads. The array's declaration goes with its last use.

use std::collections::HashSet;

use birkhoff_ir::kernel::{
    BufferId, Expr, Index, Kernel, LocalId, Program, Stmt, VarId, walk_exprs, walk_stmts,
};

use crate::kernel_fusion::{map_expr, map_value, remap, vector_loop};

/// Applies the rewrite to every kernel of `p`.
pub(crate) fn values_at_use(p: &mut Program) {
    p.kernels.iter_mut().for_each(rewrite_kernel);
}

/// Applies the rewrite to one kernel.
fn rewrite_kernel(k: &mut Kernel) {
    let mut body = std::mem::take(&mut k.body);
    let loads = local_loads(&body);
    let mut inlined = Vec::new();
    rewrite_list(&mut body, &loads, &mut inlined);
    k.body = body;
    drop_locals(k, &inlined);
}

/// How many times each local is loaded in `body` (by load site).
fn local_loads(body: &[Stmt]) -> Vec<(LocalId, usize)> {
    let mut n: Vec<(LocalId, usize)> = Vec::new();
    walk_exprs(body, &mut |e| {
        if let Expr::LocalLoad { local, .. } = e {
            match n.iter_mut().find(|(l, _)| l == local) {
                Some((_, c)) => *c += 1,
                None => n.push((*local, 1)),
            }
        }
    });
    n
}

/// Rewrites `body` and every nested statement list, recording the
/// locals whose fills were removed.
fn rewrite_list(body: &mut Vec<Stmt>, loads: &[(LocalId, usize)], inlined: &mut Vec<LocalId>) {
    for s in body.iter_mut() {
        if let Stmt::Loop { body: inner, .. } = s {
            rewrite_list(inner, loads, inlined);
        }
    }
    let mut i = 0;
    while i < body.len() {
        let Some(fill) = Fill::of(&body[i]) else {
            i += 1;
            continue;
        };
        let total = loads
            .iter()
            .find(|(l, _)| *l == fill.local)
            .map_or(0, |x| x.1);
        if !fill.inlinable(&body[i + 1..], total) {
            i += 1;
            continue;
        }
        body.remove(i);
        for s in &mut body[i..] {
            *s = fill.substitute_stmt(s);
        }
        inlined.push(fill.local);
    }
}

/// `vector var in 0..extent { local[var] = value }`.
struct Fill {
    var: VarId,
    extent: usize,
    local: LocalId,
    value: Expr,
}

impl Fill {
    fn of(s: &Stmt) -> Option<Fill> {
        let (var, extent, body) = vector_loop(s)?;
        let [
            Stmt::LocalStore {
                local,
                index,
                value,
            },
        ] = body
        else {
            return None;
        };
        (*index == Index::var(var, 1)).then(|| Fill {
            var,
            extent,
            local: *local,
            value: value.clone(),
        })
    }

    /// Whether the statements after the fill (`rest`) read each element
    /// at most once, in the forms the rewrite handles, account for all
    /// `total` loads of the local in the kernel, and leave everything the
    /// value reads unchanged.
    fn inlinable(&self, rest: &[Stmt], total: usize) -> bool {
        let mut pure = true;
        let mut bufs: HashSet<BufferId> = HashSet::new();
        let mut vars: HashSet<VarId> = HashSet::new();
        self.value.walk(&mut |e| match e {
            Expr::LocalLoad { .. } => pure = false,
            Expr::Var(v) if *v == self.var => pure = false,
            Expr::Var(v) => {
                vars.insert(*v);
            }
            Expr::Load { buf, .. } => {
                bufs.insert(*buf);
            }
            _ => {}
        });
        if !pure {
            return false;
        }
        let mut unchanged = true;
        walk_stmts(rest, &mut |s| match s {
            Stmt::Set { var, .. } if vars.contains(var) => unchanged = false,
            Stmt::Store { buf, .. } if bufs.contains(buf) => unchanged = false,
            Stmt::LocalStore { local, .. } if *local == self.local => unchanged = false,
            Stmt::Gemm(_) => unchanged = false,
            _ => {}
        });
        if !unchanged {
            return false;
        }
        // Each read site as (first element, elements), None where the
        // rewrite would not handle it.
        let mut sites: Vec<Option<(i64, usize)>> = Vec::new();
        for s in rest {
            match (s, vector_loop(s)) {
                (_, Some((var, extent, body)))
                    if body.iter().all(|s| !matches!(s, Stmt::Loop { .. })) =>
                {
                    walk_exprs(body, &mut |e| match e {
                        Expr::LocalLoad { local, index } if *local == self.local => sites
                            .push((index.terms == [(var, 1)]).then_some((index.offset, extent))),
                        _ => {}
                    });
                }
                (Stmt::Loop { body, .. }, _) => walk_exprs(body, &mut |e| {
                    if matches!(e, Expr::LocalLoad { local, .. } if *local == self.local) {
                        sites.push(None);
                    }
                }),
                _ => {
                    if let Some(v) = s.value() {
                        v.walk(&mut |e| match e {
                            Expr::LocalLoad { local, index } if *local == self.local => {
                                sites.push(index.terms.is_empty().then_some((index.offset, 1)));
                            }
                            _ => {}
                        });
                    }
                }
            }
        }
        if sites.len() != total {
            return false;
        }
        let mut read = vec![false; self.extent];
        sites.into_iter().all(|site| {
            let Some((first, count)) = site else {
                return false;
            };
            (first..first + count as i64).all(|e| {
                match usize::try_from(e).ok().and_then(|e| read.get_mut(e)) {
                    Some(r) if !*r => {
                        *r = true;
                        true
                    }
                    _ => false,
                }
            })
        })
    }

    /// The fill's value at element `at`: every load index with the fill's
    /// loop variable `j` in it, `a·j + r`, becomes `a·at + r`.
    fn value_at(&self, at: &Index) -> Expr {
        map_expr(&self.value, &|e| match e {
            Expr::Load { buf, index } => {
                let a = index.coeff(self.var);
                let mut ix = index.clone().plus(self.var, -a).shifted(a * at.offset);
                for &(v, c) in &at.terms {
                    ix = ix.plus(v, a * c);
                }
                Some(Expr::Load {
                    buf: *buf,
                    index: ix,
                })
            }
            _ => None,
        })
    }

    fn substitute_stmt(&self, s: &Stmt) -> Stmt {
        match s {
            Stmt::Loop {
                var,
                extent,
                kind,
                body,
            } => Stmt::Loop {
                var: *var,
                extent: *extent,
                kind: *kind,
                body: body.iter().map(|s| self.substitute_stmt(s)).collect(),
            },
            _ => map_value(s, &|e| {
                map_expr(e, &|x| match x {
                    Expr::LocalLoad { local, index } if *local == self.local => {
                        Some(self.value_at(index))
                    }
                    _ => None,
                })
            }),
        }
    }
}

/// Removes the declarations of `dropped` (no longer used) from `k`,
/// renumbering the locals after them.
fn drop_locals(k: &mut Kernel, dropped: &[LocalId]) {
    if dropped.is_empty() {
        return;
    }
    let new_id: Vec<Option<LocalId>> = {
        let mut next = 0u32;
        (0..k.locals.len() as u32)
            .map(|l| {
                (!dropped.contains(&LocalId(l))).then(|| {
                    next += 1;
                    LocalId(next - 1)
                })
            })
            .collect()
    };
    let rename = |l: LocalId| new_id[l.0 as usize].expect("a dropped local is no longer used");
    k.body = remap(&k.body, &|v| v, &rename, &|b| b);
    let mut i = 0;
    k.locals.retain(|_| {
        i += 1;
        new_id[i - 1].is_some()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::Op;
    use birkhoff_ir::kernel::{LoopKind, ScalarType};

    const F32: ScalarType = ScalarType::F32;
    const SRC: BufferId = BufferId(0);
    const DST: BufferId = BufferId(1);

    /// A kernel over token `t` whose first statements fill `%l[j] =
    /// src[4t + j] * s` (j < 4), followed by what `reads` builds from the
    /// token index, the local, a scale variable and a loop variable.
    fn kernel(reads: impl Fn(&mut Kernel, VarId, LocalId, VarId) -> Vec<Stmt>) -> Kernel {
        let mut k = Kernel::new("k");
        let t = k.var(ScalarType::Index);
        let s = k.var(F32);
        let j = k.var(ScalarType::Index);
        let l = k.local(F32, 4);
        let fill = Stmt::Loop {
            var: j,
            extent: 4,
            kind: LoopKind::Vector,
            body: vec![Stmt::LocalStore {
                local: l,
                index: Index::var(j, 1),
                value: Expr::binary(
                    Op::Mul,
                    Expr::load(SRC, Index::var(t, 4).plus(j, 1)),
                    Expr::Var(s),
                ),
            }],
        };
        let mut body = vec![
            Stmt::Set {
                var: s,
                value: Expr::constant(F32, 2.0),
            },
            fill,
        ];
        body.extend(reads(&mut k, t, l, s));
        k.body = vec![Stmt::Loop {
            var: t,
            extent: 8,
            kind: LoopKind::Parallel,
            body,
        }];
        k
    }

    fn read(l: LocalId, index: Index) -> Expr {
        Expr::LocalLoad { local: l, index }
    }

    fn store(t: VarId, at: i64, value: Expr) -> Stmt {
        Stmt::Store {
            buf: DST,
            index: Index::var(t, 4).shifted(at),
            value,
        }
    }

    /// Element 0 at a constant index, elements 1..4 in a vector loop.
    fn split_reads(k: &mut Kernel, t: VarId, l: LocalId) -> Vec<Stmt> {
        let i = k.var(ScalarType::Index);
        vec![
            store(t, 0, read(l, Index::constant(0))),
            Stmt::Loop {
                var: i,
                extent: 3,
                kind: LoopKind::Vector,
                body: vec![Stmt::Store {
                    buf: DST,
                    index: Index::var(t, 4).plus(i, 1).shifted(1),
                    value: read(l, Index::var(i, 1).shifted(1)),
                }],
            },
        ]
    }

    #[test]
    fn reads_once_each_take_the_value() {
        let mut k = kernel(|k, t, l, _| split_reads(k, t, l));
        rewrite_kernel(&mut k);
        let text = format!("{:?}", k.body);
        assert!(k.locals.is_empty(), "the local is dropped: {text}");
        assert!(
            !text.contains("LocalLoad") && !text.contains("LocalStore"),
            "{text}"
        );
        let Stmt::Loop { body, .. } = &k.body[0] else {
            panic!("{text}")
        };
        assert_eq!(body.len(), 3, "the fill is gone: {text}");
        // Element 0 reads src[4t]; element i + 1 reads src[4t + i + 1].
        let (t, s) = (VarId(0), VarId(1));
        let Stmt::Store { value, .. } = &body[1] else {
            panic!("{text}")
        };
        let at0 = Expr::binary(Op::Mul, Expr::load(SRC, Index::var(t, 4)), Expr::Var(s));
        assert_eq!(*value, at0);
        let Stmt::Loop {
            var: i,
            body: inner,
            ..
        } = &body[2]
        else {
            panic!("{text}")
        };
        let Stmt::Store { value, .. } = &inner[0] else {
            panic!("{text}")
        };
        let src = Index::var(t, 4).plus(*i, 1).shifted(1);
        assert_eq!(
            *value,
            Expr::binary(Op::Mul, Expr::load(SRC, src), Expr::Var(s))
        );
    }

    #[test]
    fn a_second_local_keeps_its_number() {
        let mut k = kernel(|k, t, l, _| {
            let other = k.local(F32, 2);
            let mut v = split_reads(k, t, l);
            v.push(Stmt::LocalStore {
                local: other,
                index: Index::constant(1),
                value: Expr::constant(F32, 1.0),
            });
            v.push(store(t, 0, read(other, Index::constant(1))));
            v
        });
        rewrite_kernel(&mut k);
        assert_eq!(k.locals.len(), 1);
        let text = format!("{:?}", k.body);
        assert!(
            text.contains("LocalId(0)") && !text.contains("LocalId(1)"),
            "{text}"
        );
    }

    /// Each of these keeps the fill: its element read twice, a constant
    /// read repeated by a loop, the source stored to, the scale set again,
    /// a read in a nested loop, a read past the end.
    #[test]
    fn unsafe_or_costly_reads_keep_the_fill() {
        type Reads = fn(&mut Kernel, VarId, LocalId, VarId) -> Vec<Stmt>;
        let cases: Vec<(&str, Reads)> = vec![
            ("read twice", |_, t, l, _| {
                vec![
                    store(t, 0, read(l, Index::constant(2))),
                    store(t, 1, read(l, Index::constant(2))),
                ]
            }),
            ("constant read in a loop", |k, t, l, _| {
                let i = k.var(ScalarType::Index);
                vec![Stmt::Loop {
                    var: i,
                    extent: 2,
                    kind: LoopKind::Vector,
                    body: vec![store(t, 0, read(l, Index::constant(0)))],
                }]
            }),
            ("source stored", |_, t, l, _| {
                vec![
                    Stmt::Store {
                        buf: SRC,
                        index: Index::var(t, 4),
                        value: Expr::constant(F32, 0.0),
                    },
                    store(t, 0, read(l, Index::constant(0))),
                ]
            }),
            ("scale set again", |_, t, l, s| {
                vec![
                    Stmt::Set {
                        var: s,
                        value: Expr::constant(F32, 3.0),
                    },
                    store(t, 0, read(l, Index::constant(0))),
                ]
            }),
            ("nested loop", |k, t, l, _| {
                let (i, m) = (k.var(ScalarType::Index), k.var(ScalarType::Index));
                vec![Stmt::Loop {
                    var: i,
                    extent: 2,
                    kind: LoopKind::Serial,
                    body: vec![Stmt::Loop {
                        var: m,
                        extent: 2,
                        kind: LoopKind::Vector,
                        body: vec![store(t, 0, read(l, Index::var(m, 1)))],
                    }],
                }]
            }),
            ("past the end", |_, t, l, _| {
                vec![store(t, 0, read(l, Index::constant(4)))]
            }),
        ];
        for (name, reads) in cases {
            let mut k = kernel(reads);
            let before = k.clone();
            rewrite_kernel(&mut k);
            assert_eq!(k, before, "{name}");
        }
    }
}
