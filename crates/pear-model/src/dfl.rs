//! YOLOv8's box decoding, fused: the distribution-focal-loss expectation
//! over each side's bins, anchor points and strides, and the class sigmoid,
//! written straight into the (N, 4 + classes, anchors) output.
//!
//! Done as candle ops it was ten passes and as many allocations (two
//! concatenations, a softmax over a middle axis, broadcasts): 1.4 ms of a
//! 320x256 yolov8n forward, for 1680 anchors. Here each level is one pass,
//! row by row over the anchors, with the vectorisable `activation::exp`.

use super::activation::exp;
use super::cpu::cpu_f32;
use crate::simd::Simd;
use candle_core::Tensor;
use rayon::prelude::*;

/// One detection level's head outputs.
pub struct Level<'a> {
    /// (N, 4 * reg_max, H, W): each side's bin logits, left, top, right, bottom.
    pub boxes: &'a Tensor,
    /// (N, classes, H, W): class logits.
    pub scores: &'a Tensor,
    /// Input pixels per cell.
    pub stride: f32,
}

/// The levels' anchors in order, each level row-major: (N, 4 + classes, A),
/// rows cx, cy, w, h in input pixels, then class probabilities. `proj` has
/// one value per bin (the bins' distances in cells).
pub fn decode(levels: &[Level], proj: &[f32]) -> candle_core::Result<Tensor> {
    let Some(first) = levels.first() else { candle_core::bail!("box decoding needs a level") };
    let reg = proj.len();
    let n = first.boxes.dim(0)?;
    let classes = first.scores.dim(1)?;
    let mut sizes = Vec::with_capacity(levels.len());
    for l in levels {
        let (bn, bc, h, w) = l.boxes.dims4()?;
        let (sn, sc, sh, sw) = l.scores.dims4()?;
        if (bn, bc) != (n, 4 * reg) || (sn, sc, sh, sw) != (n, classes, h, w) {
            candle_core::bail!("head outputs {:?} and {:?} do not match {reg} bins and {classes} classes", l.boxes.dims(), l.scores.dims());
        }
        sizes.push((h, w));
    }
    let total: usize = sizes.iter().map(|(h, w)| h * w).sum();
    let rows = 4 + classes;
    let mut out = vec![0f32; n * rows * total];
    let mut offset = 0;
    for (l, &(h, w)) in levels.iter().zip(&sizes) {
        let (boxes, scores) = (l.boxes.contiguous()?, l.scores.contiguous()?);
        let (bv, sv) = (cpu_f32(&boxes)?, cpu_f32(&scores)?);
        let a = h * w;
        let mut dist = vec![0f32; 4 * a];
        for b in 0..n {
            let img = &bv.slice()[b * 4 * reg * a..(b + 1) * 4 * reg * a];
            // Each side: softmax over its bins (max subtracted, as candle and
            // PyTorch do), then the expectation of the bins' distances. The
            // four sides in parallel.
            // (max(1): a level of no anchors has no chunks, and chunks of 0 are not allowed.)
            dist.par_chunks_mut(a.max(1)).zip(img.par_chunks((reg * a).max(1))).for_each(|(d, side)| {
                crate::simd::at_level!(Simd::active(), (side: &[f32], proj: &[f32], d: &mut [f32]),
                    avx512 => side_distance(side, proj, d),
                    avx2 => side_distance(side, proj, d),
                    portable => side_distance(side, proj, d),
                )
            });
            let o = &mut out[b * rows * total..(b + 1) * rows * total];
            let (lt_x, rest) = dist.split_at(a);
            let (lt_y, rest) = rest.split_at(a);
            let (rb_x, rb_y) = rest.split_at(a);
            for i in 0..a {
                let (ax, ay) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
                let (x1, y1, x2, y2) = (ax - lt_x[i], ay - lt_y[i], ax + rb_x[i], ay + rb_y[i]);
                o[offset + i] = (x1 + x2) / 2.0 * l.stride;
                o[total + offset + i] = (y1 + y2) / 2.0 * l.stride;
                o[2 * total + offset + i] = (x2 - x1) * l.stride;
                o[3 * total + offset + i] = (y2 - y1) * l.stride;
            }
            let cls = &sv.slice()[b * classes * a..(b + 1) * classes * a];
            for (k, logits) in cls.chunks_exact(a).enumerate() {
                let row = &mut o[(4 + k) * total + offset..(4 + k) * total + offset + a];
                for (p, &v) in row.iter_mut().zip(logits) {
                    *p = 1.0 / (1.0 + exp(-v));
                }
            }
        }
        offset += a;
    }
    Tensor::from_vec(out, (n, rows, total), first.boxes.device())
}

/// One side of every anchor of a level: `side` holds its bins' logits
/// (bin after bin, `d.len()` anchors each), `d` gets the expected
/// distance. Inlined into a per-level copy: at the baseline's SSE2 the
/// exp polynomial ran 4 wide and decoding was 2 % of a yolov8n forward.
#[inline(always)]
fn side_distance(side: &[f32], proj: &[f32], d: &mut [f32]) {
    let a = d.len();
    let (mut sum, mut peak, mut e) = (vec![0f32; a], side[..a].to_vec(), vec![0f32; side.len()]);
    for bin in side[a..].chunks_exact(a) {
        peak.iter_mut().zip(bin).for_each(|(m, &v)| *m = m.max(v));
    }
    for (bin, e) in side.chunks_exact(a).zip(e.chunks_exact_mut(a)) {
        for (((e, &v), &m), s) in e.iter_mut().zip(bin).zip(&peak).zip(sum.iter_mut()) {
            *e = exp(v - m);
            *s += *e;
        }
    }
    d.fill(0.0);
    for (e, &p) in e.chunks_exact(a).zip(proj) {
        for ((d, &e), &s) in d.iter_mut().zip(e).zip(&sum) {
            *d += e / s * p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The candle ops this replaces (as yolo.rs had them).
    fn reference(levels: &[Level], proj: &Tensor) -> candle_core::Result<Tensor> {
        let n = levels[0].boxes.dim(0)?;
        let reg = proj.dim(0)?;
        let (mut box_parts, mut cls_parts, mut anchors, mut strides) = (vec![], vec![], vec![], vec![]);
        for l in levels {
            let (_, _, h, w) = l.boxes.dims4()?;
            box_parts.push(l.boxes.flatten_from(2)?);
            cls_parts.push(l.scores.flatten_from(2)?);
            for y in 0..h {
                for x in 0..w {
                    anchors.push((x as f32 + 0.5, y as f32 + 0.5));
                }
            }
            strides.extend(std::iter::repeat_n(l.stride, h * w));
        }
        let total = anchors.len();
        let dev = levels[0].boxes.device();
        let box_raw = Tensor::cat(&box_parts, 2)?;
        let cls = candle_nn::ops::sigmoid(&Tensor::cat(&cls_parts, 2)?)?;
        let dist = candle_nn::ops::softmax(&box_raw.reshape((n, 4, reg, total))?, 2)?;
        let dist = dist.broadcast_mul(&proj.reshape((1, 1, reg, 1))?)?.sum(2)?;
        let ax: Vec<f32> = anchors.iter().map(|a| a.0).chain(anchors.iter().map(|a| a.1)).collect();
        let anchor = Tensor::from_vec(ax, (1, 2, total), dev)?;
        let stride = Tensor::from_vec(strides, (1, 1, total), dev)?;
        let x1y1 = anchor.broadcast_sub(&dist.narrow(1, 0, 2)?)?;
        let x2y2 = anchor.broadcast_add(&dist.narrow(1, 2, 2)?)?;
        let cxy = ((&x1y1 + &x2y2)? / 2.0)?;
        let wh = (x2y2 - x1y1)?;
        Tensor::cat(&[Tensor::cat(&[cxy, wh], 1)?.broadcast_mul(&stride)?, cls], 1)
    }

    #[test]
    fn matches_the_candle_ops() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // (batch, bins, classes, level sizes): yolov8n at 320x256 with 2 classes, and odd ones.
        type Case = (usize, usize, usize, &'static [(usize, usize)]);
        let cases: [Case; 3] = [(1, 16, 2, &[(32, 40), (16, 20), (8, 10)]), (2, 16, 80, &[(4, 6), (2, 3), (1, 2)]), (1, 4, 1, &[(3, 5)])];
        for (n, reg, classes, sizes) in cases {
            let proj = Tensor::arange(0f32, reg as f32, &dev)?;
            // Logits up to +-8: the softmax's max subtraction matters.
            let heads = sizes
                .iter()
                .map(|&(h, w)| {
                    Ok((Tensor::randn(0f32, 4.0, (n, 4 * reg, h, w), &dev)?, Tensor::randn(0f32, 4.0, (n, classes, h, w), &dev)?))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let levels: Vec<Level> =
                heads.iter().zip([8.0, 16.0, 32.0]).map(|((b, s), stride)| Level { boxes: b, scores: s, stride }).collect();
            let got = decode(&levels, &proj.to_vec1()?)?;
            let want = reference(&levels, &proj)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff <= 1e-5 * scale, "n{n} reg{reg} classes{classes}: max diff {diff} (values up to {scale})");
        }
        Ok(())
    }

    #[test]
    fn mismatched_heads_are_an_error() {
        let dev = Device::Cpu;
        let b = Tensor::zeros((1, 64, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let s = Tensor::zeros((1, 2, 2, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(decode(&[Level { boxes: &b, scores: &s, stride: 8.0 }], &[0.0; 16]).is_err());
        assert!(decode(&[Level { boxes: &b, scores: &s, stride: 8.0 }], &[0.0; 15]).is_err(), "bins disagree");
        assert!(decode(&[], &[0.0; 16]).is_err());
    }
}
