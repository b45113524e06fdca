//! Affine views: where each element of a value lives in a buffer.
//!
//! A value stored in a buffer, or reached from one through `permute`,
//! `broadcast`, `slice` and (from row-major data) `reshape`, is an
//! [`Access`]: element `[i_0, …, i_r]` is at `offset + Σ i_k · strides[k]`.
//! Composing views only changes strides and offset, so consumers read
//! through views without copies and every index stays affine.

use birkhoff_ir::kernel::{BufferId, Index};
use birkhoff_ir::strides;

/// Where a tensor's elements are in a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The buffer.
    pub buf: BufferId,
    /// Element offset of `[0, …, 0]`.
    pub offset: i64,
    /// Element stride of each dimension (0 for broadcast dimensions).
    pub strides: Vec<i64>,
    /// The shape.
    pub shape: Vec<usize>,
}

impl Access {
    /// A whole buffer of `shape`, row-major.
    pub fn contiguous(buf: BufferId, shape: &[usize]) -> Access {
        Access {
            buf,
            offset: 0,
            strides: strides(shape).into_iter().map(|s| s as i64).collect(),
            shape: shape.to_vec(),
        }
    }

    /// Whether elements are exactly the row-major layout of the shape
    /// from `offset` on (what a reshape or a matrix routine needs).
    pub fn is_row_major(&self) -> bool {
        let want = strides(&self.shape);
        self.shape
            .iter()
            .zip(&self.strides)
            .zip(&want)
            .all(|((&d, &s), &w)| d == 1 || s == w as i64)
    }

    /// `permute(perm)`: result axis k is this axis `perm[k]`.
    pub fn permute(&self, perm: &[usize]) -> Access {
        Access {
            buf: self.buf,
            offset: self.offset,
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
        }
    }

    /// NumPy-style broadcast to `shape`: new and stretched axes get stride 0.
    pub fn broadcast(&self, shape: &[usize]) -> Access {
        let off = shape.len() - self.shape.len();
        let strides = (0..shape.len())
            .map(|k| {
                if k < off || (self.shape[k - off] == 1 && shape[k] != 1) {
                    0
                } else {
                    self.strides[k - off]
                }
            })
            .collect();
        Access {
            buf: self.buf,
            offset: self.offset,
            strides,
            shape: shape.to_vec(),
        }
    }

    /// `slice(start, end)`.
    pub fn slice(&self, start: &[usize], end: &[usize]) -> Access {
        let offset = self.offset
            + start
                .iter()
                .zip(&self.strides)
                .map(|(&s, &st)| s as i64 * st)
                .sum::<i64>();
        let shape = start.iter().zip(end).map(|(&s, &e)| e - s).collect();
        Access {
            buf: self.buf,
            offset,
            strides: self.strides.clone(),
            shape,
        }
    }

    /// `reshape(shape)`, if this view is row-major (else `None`: the
    /// caller materializes first).
    pub fn reshape(&self, shape: &[usize]) -> Option<Access> {
        self.is_row_major().then(|| Access {
            buf: self.buf,
            offset: self.offset,
            strides: strides(shape).into_iter().map(|s| s as i64).collect(),
            shape: shape.to_vec(),
        })
    }

    /// The flat buffer index of element `idx` (one affine index per axis).
    pub fn at(&self, idx: &[Index]) -> Index {
        idx.iter()
            .zip(&self.strides)
            .fold(Index::constant(self.offset), |acc, (ix, &s)| {
                add(acc, &scale(ix, s))
            })
    }
}

/// `c · ix`.
pub fn scale(ix: &Index, c: i64) -> Index {
    if c == 0 {
        return Index::constant(0);
    }
    Index {
        offset: ix.offset * c,
        terms: ix.terms.iter().map(|&(v, k)| (v, k * c)).collect(),
    }
}

/// `a + b`.
pub fn add(a: Index, b: &Index) -> Index {
    let mut out = a.shifted(b.offset);
    for &(v, c) in &b.terms {
        out = out.plus(v, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use birkhoff_ir::kernel::VarId;

    #[test]
    fn views_compose_affinely() {
        let b = Access::contiguous(BufferId(0), &[2, 3, 4]);
        assert!(b.is_row_major());
        let p = b.permute(&[2, 0, 1]);
        assert_eq!(
            (p.shape.clone(), p.strides.clone()),
            (vec![4, 2, 3], vec![1, 12, 4])
        );
        assert!(!p.is_row_major() && p.reshape(&[24]).is_none());
        let s = b.slice(&[1, 0, 2], &[2, 3, 4]);
        assert_eq!((s.offset, s.shape), (14, vec![1, 3, 2]));
        let r = b.reshape(&[6, 4]).unwrap();
        assert_eq!(r.strides, vec![4, 1]);
        let bc = Access::contiguous(BufferId(1), &[3, 1]).broadcast(&[5, 3, 4]);
        assert_eq!(bc.strides, vec![0, 1, 0]);
        let (i, j) = (VarId(0), VarId(1));
        let at = r.at(&[Index::var(i, 1), Index::var(j, 1).shifted(1)]);
        assert_eq!((at.offset, at.coeff(i), at.coeff(j)), (1, 4, 1));
    }
}
