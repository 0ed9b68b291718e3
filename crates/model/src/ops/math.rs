//! Element-wise kernels of the CPU path, written as plain branch-free loops that the compiler
//! vectorises: each public function runs an AVX2 build of its loop where the CPU has AVX2 and
//! FMA (checked once per call, cheaply), else the portable build. erf and exp are rational /
//! polynomial approximations accurate to a few ulp of f32, so no call leaves the loop (libm's
//! scalar `erff` made GELU one of the slowest steps of a layer).

/// Defines `pub fn $name` that runs `$body` compiled for AVX2 + FMA when the CPU has them.
macro_rules! vectorised {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

/// erf(x), |error| < 2e-7: Eigen's / XLA's rational approximation on [-4, 4] (erf is ±1 in f32
/// beyond).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_2e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_5e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// e^x, relative error < 2e-7 (Cephes' expf: x = n·ln2 + r, a degree-5 polynomial for e^r).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = r * 1.987_569_1e-4 + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // SAFETY: `n` is a whole number in [-126, 128] (x was clamped), so the conversion is
    // exact; unlike `as`, it needs no saturation checks and so stays vectorised.
    let n: i32 = unsafe { n.to_int_unchecked() };
    e_r * f32::from_bits(((n + 127) as u32) << 23)
}

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

vectorised! {
    /// GELU, erf form (BERT's `gelu`), in place.
    pub fn gelu(values: &mut [f32]) {
        for v in values.iter_mut() {
            let x = *v;
            *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

vectorised! {
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), in place.
    pub fn gelu_tanh(values: &mut [f32]) {
        const C: f32 = 0.797_884_6; // √(2/π)
        for v in values.iter_mut() {
            let x = *v;
            // tanh(u) = 1 − 2 / (e^{2u} + 1)
            let u = C * (x + 0.044_715 * x * x * x);
            let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
            *v = 0.5 * x * (1.0 + tanh);
        }
    }
}

vectorised! {
    pub fn relu(values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = if *v > 0.0 { *v } else { 0.0 };
        }
    }
}

vectorised! {
    pub fn silu(values: &mut [f32]) {
        for v in values.iter_mut() {
            let x = *v;
            *v = x / (1.0 + exp(-x));
        }
    }
}

vectorised! {
    /// Softmax of each `width`-wide row of `rows`, in place.
    pub fn softmax_rows(rows: &mut [f32], width: usize) {
        for row in rows.chunks_mut(width) {
            let m = max(row);
            for v in row.iter_mut() {
                *v = exp(*v - m);
            }
            let scale = 1.0 / sum(row);
            for v in row.iter_mut() {
                *v *= scale;
            }
        }
    }
}

vectorised! {
    /// `out = LayerNorm(x + residual)` for one row (`gamma`, `beta`: the row's width).
    pub fn add_layer_norm(
        x: &[f32], residual: &[f32], gamma: &[f32], beta: &[f32], epsilon: f32, out: &mut [f32]
    ) {
        for ((o, a), b) in out.iter_mut().zip(x).zip(residual) {
            *o = a + b;
        }
        let n = out.len() as f32;
        let mean = sum(out) / n;
        for o in out.iter_mut() {
            *o -= mean;
        }
        let mut squares = [0f32; 8];
        let chunks = out.chunks_exact(8);
        let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        for chunk in chunks {
            for (s, v) in squares.iter_mut().zip(chunk) {
                *s += v * v;
            }
        }
        let variance = (squares.iter().sum::<f32>() + rest) / n;
        let scale = 1.0 / (variance + epsilon).sqrt();
        for ((o, g), b) in out.iter_mut().zip(gamma).zip(beta) {
            *o = *o * scale * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges fast for |x| < 3) and asymptotics beyond.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_exp_are_accurate_to_f32() {
        let mut worst_erf = 0f64;
        let mut worst_exp = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst_erf = worst_erf.max((erf(x) as f64 - erf_f64(x as f64)).abs());
            let y = x * 14.0;
            let e = (y as f64).exp();
            worst_exp = worst_exp.max(((exp(y) as f64) - e).abs() / e);
        }
        assert!(worst_erf < 5e-7, "erf off by {worst_erf:e}");
        assert!(worst_exp < 5e-7, "exp off by {worst_exp:e} (relative)");
        assert!((0.0..1e-37).contains(&exp(-200.0)));
    }

    #[test]
    fn row_kernels_match_their_definitions() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 / 3.0 - 4.0)
            .collect();
        let mut soft = row.clone();
        softmax_rows(&mut soft, 37);
        let denominator: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        for (s, &v) in soft.iter().zip(&row) {
            assert!((*s as f64 - (v as f64).exp() / denominator).abs() < 1e-7);
        }

        let residual: Vec<f32> = row.iter().map(|v| v * 0.5 + 1.0).collect();
        let gamma: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 50.0).collect();
        let beta: Vec<f32> = (0..37).map(|i| i as f32 / 100.0).collect();
        let mut out = vec![0f32; 37];
        add_layer_norm(&row, &residual, &gamma, &beta, 1e-12, &mut out);
        let y: Vec<f64> = row
            .iter()
            .zip(&residual)
            .map(|(a, b)| (a + b) as f64)
            .collect();
        let mean = y.iter().sum::<f64>() / 37.0;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 37.0;
        for i in 0..37 {
            let expected = (y[i] - mean) / var.sqrt() * gamma[i] as f64 + beta[i] as f64;
            assert!(
                (out[i] as f64 - expected).abs() < 1e-5,
                "{i}: {} vs {expected}",
                out[i]
            );
        }

        let mut g: Vec<f32> = row.clone();
        gelu(&mut g);
        for (o, &x) in g.iter().zip(&row) {
            let expected = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / 2f64.sqrt()));
            assert!((*o as f64 - expected).abs() < 1e-6);
        }
        let mut t: Vec<f32> = row.clone();
        gelu_tanh(&mut t);
        for (o, &x) in t.iter().zip(&row) {
            let x = x as f64;
            let expected = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((*o as f64 - expected).abs() < 1e-6);
        }
    }
}
