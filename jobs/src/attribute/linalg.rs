//! The small dense linear algebra attribution needs, in `f64`, and the bridges between host
//! matrices and Burn tensors. Burn does the big matrix products (via `gemm`); only the
//! factorizations of the `p × p` per-block matrices run here.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// A row-major square matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Square {
    /// Side.
    pub n: usize,
    /// `n × n` values, row-major.
    pub data: Vec<f64>,
}

impl Square {
    /// Download a `[n, n]` tensor.
    pub fn from_tensor(t: &Tensor<2>) -> Result<Square> {
        let [r, c] = t.dims();
        if r != c {
            return Err(Error::Internal(format!("expected a square matrix, got {r}×{c}")));
        }
        let v = to_vec(t)?;
        Ok(Square { n: r, data: v.into_iter().map(f64::from).collect() })
    }

    /// Upload as an `f32` tensor.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        let v: Vec<f32> = self.data.iter().map(|x| *x as f32).collect();
        Tensor::from_data(TensorData::new(v, [self.n, self.n]), device)
    }

    /// Trace.
    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.data[i * self.n + i]).sum()
    }

    /// Add `lambda` to the diagonal.
    pub fn add_diagonal(&mut self, lambda: f64) {
        for i in 0..self.n {
            self.data[i * self.n + i] += lambda;
        }
    }

    /// Cholesky factor `L` (lower triangular, `A = L·Lᵀ`) of a symmetric positive-definite matrix.
    pub fn cholesky(&self) -> Result<Square> {
        let n = self.n;
        let mut l = vec![0f64; n * n];
        for j in 0..n {
            let (row_j, _) = l.split_at(j * n + n);
            let lj = &row_j[j * n..j * n + j];
            let d = self.data[j * n + j] - lj.iter().map(|x| x * x).sum::<f64>();
            if d <= 0.0 || !d.is_finite() {
                return Err(Error::Internal(format!("matrix is not positive definite (pivot {j}: {d})")));
            }
            let djj = d.sqrt();
            l[j * n + j] = djj;
            for i in j + 1..n {
                let (head, tail) = l.split_at_mut(i * n);
                let lj = &head[j * n..j * n + j];
                let li = &tail[..j];
                let s: f64 = li.iter().zip(lj).map(|(a, b)| a * b).sum();
                tail[j] = (self.data[i * n + j] - s) / djj;
            }
        }
        Ok(Square { n, data: l })
    }

    /// Inverse of a lower-triangular matrix, by forward substitution on the rows of the identity.
    pub fn lower_inverse(&self) -> Square {
        let n = self.n;
        let mut y = vec![0f64; n * n];
        for i in 0..n {
            let (done, rest) = y.split_at_mut(i * n);
            let row = &mut rest[..n];
            row[i] = 1.0;
            for k in 0..i {
                let lik = self.data[i * n + k];
                if lik != 0.0 {
                    let yk = &done[k * n..k * n + k + 1];
                    for (r, v) in row[..=k].iter_mut().zip(yk) {
                        *r -= lik * v;
                    }
                }
            }
            let d = self.data[i * n + i];
            for r in row[..=i].iter_mut() {
                *r /= d;
            }
        }
        Square { n, data: y }
    }

    /// Solve `L·Lᵀ x = b` where `self` is the Cholesky factor `L`.
    pub fn cholesky_solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut y = b.to_vec();
        for i in 0..n {
            let s: f64 = self.data[i * n..i * n + i].iter().zip(&y[..i]).map(|(l, y)| l * y).sum();
            y[i] = (y[i] - s) / self.data[i * n + i];
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| self.data[k * n + i] * y[k]).sum();
            y[i] = (y[i] - s) / self.data[i * n + i];
        }
        y
    }
}

/// A tensor's values as `f32`.
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Result<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Internal(format!("reading a tensor back: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_inverse_reconstruct() {
        // A = M Mᵀ + I for a fixed M.
        let m = [[2.0, 0.5, 0.1], [0.3, 1.5, -0.2], [0.0, 0.4, 1.0]];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| m[i][k] * m[j][k]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        let a = Square { n: 3, data: a };
        let l = a.cholesky().expect("spd");
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l.data[i * 3 + k] * l.data[j * 3 + k]).sum();
                assert!((v - a.data[i * 3 + j]).abs() < 1e-12);
            }
        }
        let inv = l.lower_inverse();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| inv.data[i * 3 + k] * l.data[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "L⁻¹L at {i},{j} = {v}");
            }
        }
        let b = [1.0, -2.0, 0.5];
        let x = l.cholesky_solve(&b);
        for (i, want) in b.iter().enumerate() {
            let ax: f64 = (0..3).map(|k| a.data[i * 3 + k] * x[k]).sum();
            assert!((ax - want).abs() < 1e-12, "A·x at {i} = {ax}, want {want}");
        }
        let not_spd = Square { n: 2, data: vec![1.0, 2.0, 2.0, 1.0] };
        assert!(not_spd.cholesky().is_err());
    }
}
