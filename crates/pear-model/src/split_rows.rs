//! Image rows zero-padded and split by stride phase, so that every kernel
//! tap of a strided convolution reads a contiguous run: shared by the
//! depthwise kernel (per plane) and the dense one's column matrix.

thread_local! {
    /// One zero-padded row, for the stride-2 split.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `row` with `p` zeros each side, as its columns 0, s, 2s, ... then 1, s+1, ...
/// `dst` has `row.len() + 2p` elements.
pub(crate) fn split_row(row: &[f32], p: usize, s: usize, dst: &mut [f32]) {
    if s == 1 {
        dst[..p].fill(0.0);
        dst[p..p + row.len()].copy_from_slice(row);
        dst[p + row.len()..].fill(0.0);
        return;
    }
    let (w, wp) = (row.len(), row.len() + 2 * p);
    if s == 2 {
        // The common stride, as pad-then-deinterleave: both loops vectorise
        // (the general one below gathers element by element).
        PADDED.with_borrow_mut(|padded| {
            padded.clear();
            padded.resize(p, 0.0);
            padded.extend_from_slice(row);
            padded.resize(wp + 1, 0.0); // + 1: an odd width still splits in pairs
            let (even, odd) = dst.split_at_mut(wp.div_ceil(2));
            for ((pair, e), o) in padded.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
                *e = pair[0];
                *o = pair[1];
            }
            if wp % 2 == 1 {
                even[wp / 2] = padded[wp - 1];
            }
        });
        return;
    }
    // Phase q holds padded columns q, q+s, ...: zeros, then row[c - p] while
    // c - p < len, then zeros again.
    let mut i = 0;
    for q in 0..s {
        let cols = (wp - q).div_ceil(s);
        let first = (p.saturating_sub(q)).div_ceil(s).min(cols); // first column >= p
        let last = (p + w).saturating_sub(q).div_ceil(s).min(cols); // first column >= p + w
        dst[i..i + first].fill(0.0);
        for (d, j) in dst[i + first..i + last].iter_mut().zip(first..last) {
            *d = row[q + j * s - p];
        }
        dst[i + last..i + cols].fill(0.0);
        i += cols;
    }
}

/// Per kernel column kx of a k-wide kernel at stride s, where output column
/// 0 reads in a split row of padded width `wp`: padded column s*ox + kx is
/// phase kx % s, index ox + kx / s.
pub(crate) fn split_bases(k: usize, s: usize, wp: usize) -> Vec<usize> {
    (0..k).map(|kx| (0..kx % s).map(|q| (wp - q).div_ceil(s)).sum::<usize>() + kx / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap's run equals sampling the zero-padded row at stride s.
    #[test]
    fn runs_are_strided_samples_of_the_padded_row() {
        for (w, p, s, k) in
            [(7, 1, 2, 3), (8, 2, 2, 5), (9, 1, 1, 3), (10, 1, 3, 3), (1, 1, 2, 3), (5, 0, 2, 1), (6, 1, 2, 3), (9, 2, 2, 5), (4, 0, 2, 2)]
        {
            let row: Vec<f32> = (1..=w).map(|v| v as f32).collect();
            let wp = w + 2 * p;
            let padded: Vec<f32> = (0..wp).map(|c| if c >= p && c < p + w { row[c - p] } else { 0.0 }).collect();
            let mut dst = vec![f32::NAN; wp];
            split_row(&row, p, s, &mut dst);
            let ow = (wp - k) / s + 1;
            for (kx, b) in split_bases(k, s, wp).into_iter().enumerate() {
                for ox in 0..ow {
                    assert_eq!(dst[b + ox], padded[ox * s + kx], "w{w} p{p} s{s} k{k} kx{kx} ox{ox}");
                }
            }
        }
    }
}
