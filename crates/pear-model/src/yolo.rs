//! ultralytics YOLOv8 detection (any scale n/s/m/l/x, any class count).
//!
//! Tensor names are ultralytics' own (`model.{i}...`), so a converted
//! checkpoint loads unchanged. Widths and repeats are read from the tensors;
//! the topology (which layer feeds which, strides) is YOLOv8's fixed yaml.
//! Differences from candle's example that change answers, all fixed here:
//! SPPF pads its max-pool with -inf (not zeros), and the DFL projection is
//! read from the checkpoint.

use super::cpu::hot_threads;
use super::dfl;
use super::layers::{fold_bn, Act, Conv};
use super::pool::max_pool_same;
use super::upsample::upsample_nearest;
use super::weights::Weights;
use super::{ModelError, Result};
use candle_core::Tensor;

/// Output strides of the three detection levels (P3, P4, P5).
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// ultralytics `Conv`: conv + BN + SiLU, padding k/2.
fn conv(vb: &Weights, eps: f64, stride: usize) -> Result<Conv> {
    Conv::load_bn(&vb.pp("conv"), &vb.pp("bn"), eps, stride, Act::Silu)
}

#[derive(Debug, Clone)]
pub struct Bottleneck {
    cv1: Conv,
    cv2: Conv,
    add: bool,
}

impl Bottleneck {
    pub fn load(vb: &Weights, eps: f64, shortcut: bool) -> Result<Self> {
        let cv1 = conv(&vb.pp("cv1"), eps, 1)?;
        let cv2 = conv(&vb.pp("cv2"), eps, 1)?;
        let add = shortcut && cv1.in_channels == cv2.out_channels;
        Ok(Bottleneck { cv1, cv2, add })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.cv2.forward_with(&[&self.cv1.forward(x)?], None, self.add.then_some(x))
    }
}

/// CSP bottleneck with two convolutions, all intermediate outputs concatenated.
#[derive(Debug, Clone)]
pub struct C2f {
    cv1: Conv,
    cv2: Conv,
    m: Vec<Bottleneck>,
    hidden: usize,
}

impl C2f {
    pub fn load(vb: &Weights, eps: f64, shortcut: bool) -> Result<Self> {
        let cv1 = conv(&vb.pp("cv1"), eps, 1)?;
        let cv2 = conv(&vb.pp("cv2"), eps, 1)?;
        let n = vb.count_children("m");
        let m = (0..n).map(|i| Bottleneck::load(&vb.pp(format!("m.{i}")), eps, shortcut)).collect::<Result<Vec<_>>>()?;
        let hidden = cv1.out_channels / 2;
        if cv2.in_channels != (2 + n) * hidden {
            return Err(ModelError::BadMetadata(format!("C2f cv2 takes {} channels, expected {}", cv2.in_channels, (2 + n) * hidden)));
        }
        Ok(C2f { cv1, cv2, m, hidden })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_parts(&[x])
    }

    /// C2f of the channel-concatenation of `parts` (never materialised; nor
    /// is the concatenation of the bottleneck outputs).
    pub fn forward_parts(&self, parts: &[&Tensor]) -> candle_core::Result<Tensor> {
        let y = self.cv1.forward_with(parts, None, None)?;
        let mut ys = vec![y.narrow(1, 0, self.hidden)?, y.narrow(1, self.hidden, self.hidden)?];
        for m in &self.m {
            let next = m.forward(&ys[ys.len() - 1])?;
            ys.push(next);
        }
        self.cv2.forward_with(&ys.iter().collect::<Vec<_>>(), None, None)
    }
}

/// Spatial pyramid pooling (fast): three chained 5x5 max-pools.
#[derive(Debug, Clone)]
pub struct Sppf {
    cv1: Conv,
    cv2: Conv,
}

impl Sppf {
    pub fn load(vb: &Weights, eps: f64) -> Result<Self> {
        Ok(Sppf { cv1: conv(&vb.pp("cv1"), eps, 1)?, cv2: conv(&vb.pp("cv2"), eps, 1)? })
    }

    /// 5x5 max-pool, stride 1, padding 2 with -inf as PyTorch pads.
    fn pool(x: &Tensor) -> candle_core::Result<Tensor> {
        max_pool_same(x, 5)
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y0 = self.cv1.forward(x)?;
        let y1 = Self::pool(&y0)?;
        let y2 = Self::pool(&y1)?;
        let y3 = Self::pool(&y2)?;
        self.cv2.forward_with(&[&y0, &y1, &y2, &y3], None, None)
    }
}

/// One branch of the head: two 3x3 convs (or DWConv+1x1 pairs) and a 1x1
/// predictor. Its first conv is left out when the level runs it together
/// with the other branch's (`Level::first`).
#[derive(Debug, Clone)]
struct HeadBranch {
    convs: Vec<Conv>,
    pred: Conv,
}

impl HeadBranch {
    /// The branch at `vb`, without its first conv if `skip_first`.
    fn load(vb: &Weights, eps: f64, skip_first: bool) -> Result<Self> {
        let mut convs = Vec::new();
        for i in 0..2 {
            let sub = vb.pp(i);
            if sub.contains("conv.weight") {
                if i > 0 || !skip_first {
                    convs.push(conv(&sub, eps, 1)?);
                }
            } else {
                // Non-legacy head (YOLO11 style): DWConv then 1x1 Conv.
                convs.push(conv(&sub.pp(0), eps, 1)?);
                convs.push(conv(&sub.pp(1), eps, 1)?);
            }
        }
        let pred = Conv::load_plain(&vb.pp(2), 1, Act::None)?;
        Ok(HeadBranch { convs, pred })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for c in &self.convs {
            x = c.forward(&x)?;
        }
        self.pred.forward(&x)
    }
}

/// One level of the head: the box and score branches over one feature map.
#[derive(Debug, Clone)]
struct Level {
    /// Both branches' first convs as one, with the box branch's output
    /// channels first (and how many they are), where both are dense 3x3
    /// convs of the same input: the map is laid out once and the GEMM has
    /// twice the rows. They are a fifth of yolov8n's multiply-adds.
    first: Option<(Conv, usize)>,
    boxes: HeadBranch,
    scores: HeadBranch,
}

impl Level {
    fn load(boxes: &Weights, scores: &Weights, eps: f64) -> Result<Self> {
        let (b0, s0) = (boxes.pp("0"), scores.pp("0"));
        let dense =
            |w: &Weights| w.contains("conv.weight") && w.pp("conv").get_rank("weight", 4).is_ok_and(|t| t.dim(1).is_ok_and(|i| i > 1));
        let first = if dense(&b0) && dense(&s0) {
            let (bw, bb) = fold_bn(&b0.pp("conv"), &b0.pp("bn"), eps)?;
            let (sw, sb) = fold_bn(&s0.pp("conv"), &s0.pp("bn"), eps)?;
            if bw.dims()[1..] != sw.dims()[1..] {
                return Err(ModelError::BadMetadata(format!(
                    "head branches' first convs disagree on their input: {:?} vs {:?}",
                    bw.dims(),
                    sw.dims()
                )));
            }
            let split = bw.dim(0)?;
            Some((Conv::from_parts(Tensor::cat(&[bw, sw], 0)?, Tensor::cat(&[bb, sb], 0)?, 1, Act::Silu)?, split))
        } else {
            None
        };
        let shared = first.is_some();
        Ok(Level { first, boxes: HeadBranch::load(boxes, eps, shared)?, scores: HeadBranch::load(scores, eps, shared)? })
    }

    /// The level's raw box and score predictions.
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        match &self.first {
            Some((conv, split)) => {
                let y = conv.forward(x)?;
                let rest = conv.out_channels - split;
                Ok((self.boxes.forward(&y.narrow(1, 0, *split)?)?, self.scores.forward(&y.narrow(1, *split, rest)?)?))
            }
            None => Ok((self.boxes.forward(x)?, self.scores.forward(x)?)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Detect {
    levels: Vec<Level>,
    /// DFL projection (reg_max values, 0..reg_max-1 in every checkpoint).
    proj: Vec<f32>,
    pub num_classes: usize,
}

impl Detect {
    pub fn load(vb: &Weights, eps: f64) -> Result<Self> {
        let levels =
            (0..3).map(|i| Level::load(&vb.pp(format!("cv2.{i}")), &vb.pp(format!("cv3.{i}")), eps)).collect::<Result<Vec<_>>>()?;
        let proj = vb.get_rank("dfl.conv.weight", 4)?.flatten_all()?.to_vec1::<f32>()?;
        let reg_max = proj.len();
        if levels[0].boxes.pred.out_channels != 4 * reg_max {
            return Err(ModelError::BadMetadata(format!(
                "box head gives {} channels, DFL expects {}",
                levels[0].boxes.pred.out_channels,
                4 * reg_max
            )));
        }
        let num_classes = levels[0].scores.pred.out_channels;
        Ok(Detect { levels, proj, num_classes })
    }

    /// Feature maps -> (N, 4 + classes, anchors): xywh in input pixels, then class probabilities.
    pub fn forward(&self, feats: &[Tensor; 3]) -> candle_core::Result<Tensor> {
        let heads = self.levels.iter().zip(feats).map(|(l, f)| l.forward(f)).collect::<candle_core::Result<Vec<_>>>()?;
        let levels: Vec<dfl::Level> =
            heads.iter().zip(STRIDES).map(|((boxes, scores), s)| dfl::Level { boxes, scores, stride: s as f32 }).collect();
        dfl::decode(&levels, &self.proj)
    }
}

/// The whole detector: backbone, neck and head as in yolov8.yaml.
#[derive(Debug, Clone)]
pub struct YoloV8 {
    b0: Conv,
    b1: Conv,
    b2: C2f,
    b3: Conv,
    b4: C2f,
    b5: Conv,
    b6: C2f,
    b7: Conv,
    b8: C2f,
    b9: Sppf,
    h12: C2f,
    h15: C2f,
    h16: Conv,
    h18: C2f,
    h19: Conv,
    h21: C2f,
    pub detect: Detect,
    /// Number of bottlenecks in each C2f, in layer order (tells the depth scale).
    pub repeats: Vec<usize>,
    /// Output channels of layer 0 (tells the width scale).
    pub stem_channels: usize,
}

impl YoloV8 {
    /// `vb` is the checkpoint's root (holding `model.0...model.22`); `eps` is its BN eps.
    pub fn load(vb: &Weights, eps: f64) -> Result<Self> {
        let m = |i: usize| vb.pp(format!("model.{i}"));
        let b0 = conv(&m(0), eps, 2)?;
        let c2f = |i: usize, shortcut: bool| C2f::load(&m(i), eps, shortcut);
        let y = YoloV8 {
            stem_channels: b0.out_channels,
            b0,
            b1: conv(&m(1), eps, 2)?,
            b2: c2f(2, true)?,
            b3: conv(&m(3), eps, 2)?,
            b4: c2f(4, true)?,
            b5: conv(&m(5), eps, 2)?,
            b6: c2f(6, true)?,
            b7: conv(&m(7), eps, 2)?,
            b8: c2f(8, true)?,
            b9: Sppf::load(&m(9), eps)?,
            h12: c2f(12, false)?,
            h15: c2f(15, false)?,
            h16: conv(&m(16), eps, 2)?,
            h18: c2f(18, false)?,
            h19: conv(&m(19), eps, 2)?,
            h21: c2f(21, false)?,
            detect: Detect::load(&m(22), eps)?,
            repeats: vec![],
        };
        let repeats = [&y.b2, &y.b4, &y.b6, &y.b8, &y.h12, &y.h15, &y.h18, &y.h21].iter().map(|c| c.m.len()).collect();
        Ok(YoloV8 { repeats, ..y })
    }

    /// (N, 3, H, W) in [0, 1], H and W multiples of 32 -> (N, 4 + classes, anchors).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _hot = hot_threads();
        let x = self.b1.forward(&self.b0.forward(x)?)?;
        let x = self.b3.forward(&self.b2.forward(&x)?)?;
        let p3 = self.b4.forward(&x)?;
        let p4 = self.b6.forward(&self.b5.forward(&p3)?)?;
        let p5 = self.b9.forward(&self.b8.forward(&self.b7.forward(&p4)?)?)?;
        let up = |t: &Tensor| upsample_nearest(t, 2);
        let h12 = self.h12.forward_parts(&[&up(&p5)?, &p4])?;
        let o3 = self.h15.forward_parts(&[&up(&h12)?, &p3])?;
        let o4 = self.h18.forward_parts(&[&self.h16.forward(&o3)?, &h12])?;
        let o5 = self.h21.forward_parts(&[&self.h19.forward(&o4)?, &p5])?;
        self.detect.forward(&[o3, o4, o5])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    /// Random weights for one head level with `c` input channels: boxes
    /// cv2 (c -> 64 -> 64 -> 64), scores cv3 (c -> 48 -> 48 -> 3).
    fn level_weights(c: usize) -> candle_core::Result<Weights> {
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        let mut conv_bn = |name: String, o: usize, i: usize| -> candle_core::Result<()> {
            map.insert(format!("{name}.conv.weight"), Tensor::randn(0f32, 0.1, (o, i, 3, 3), &dev)?);
            map.insert(format!("{name}.bn.weight"), Tensor::rand(0.5f32, 1.5, o, &dev)?);
            map.insert(format!("{name}.bn.bias"), Tensor::randn(0f32, 0.1, o, &dev)?);
            map.insert(format!("{name}.bn.running_mean"), Tensor::randn(0f32, 0.1, o, &dev)?);
            map.insert(format!("{name}.bn.running_var"), Tensor::rand(0.5f32, 1.5, o, &dev)?);
            Ok(())
        };
        for (branch, hidden) in [("cv2.0", 64), ("cv3.0", 48)] {
            conv_bn(format!("{branch}.0"), hidden, c)?;
            conv_bn(format!("{branch}.1"), hidden, hidden)?;
        }
        for (branch, hidden, o) in [("cv2.0", 64, 64), ("cv3.0", 48, 3)] {
            map.insert(format!("{branch}.2.weight"), Tensor::randn(0f32, 0.1, (o, hidden, 1, 1), &dev)?);
            map.insert(format!("{branch}.2.bias"), Tensor::randn(0f32, 0.1, o, &dev)?);
        }
        Weights::new(map, &dev).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// The level with both first convs run as one gives what the two
    /// branches give run whole, each over the feature map.
    #[test]
    fn shared_first_conv_equals_both_branches_whole() -> candle_core::Result<()> {
        let to_candle = |e: ModelError| candle_core::Error::Msg(e.to_string());
        for (c, h, w) in [(32, 12, 10), (64, 5, 7)] {
            let vb = level_weights(c)?;
            let level = Level::load(&vb.pp("cv2.0"), &vb.pp("cv3.0"), 1e-3).map_err(to_candle)?;
            assert!(level.first.as_ref().is_some_and(|(conv, split)| conv.out_channels == 112 && *split == 64));
            let boxes = HeadBranch::load(&vb.pp("cv2.0"), 1e-3, false).map_err(to_candle)?;
            let scores = HeadBranch::load(&vb.pp("cv3.0"), 1e-3, false).map_err(to_candle)?;
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &Device::Cpu)?;
            let (gb, gs) = level.forward(&x)?;
            for (got, want) in [(gb, boxes.forward(&x)?), (gs, scores.forward(&x)?)] {
                assert_eq!(got.dims(), want.dims());
                let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
                assert!(diff / scale < 1e-5, "{c}x{h}x{w}: {diff}");
            }
        }
        Ok(())
    }
}
