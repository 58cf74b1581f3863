//! timm's EfficientNet (B0-B7 and width/depth-scaled variants), inference only.
//!
//! Names follow timm (`conv_stem`, `bn1`, `blocks.i.j.*`, `conv_head`, `bn2`,
//! `classifier`), so a timm state dict loads as is. Widths, depths and kernel
//! sizes are read from the tensors; what the tensors cannot say (each stage's
//! stride) comes from EfficientNet's fixed seven-stage layout. Padding is
//! timm's symmetric k/2 (not TF "same"), batch-norm eps is timm's 1e-5.

use super::cpu::hot_threads;
use super::layers::{global_avg_pool, Act, Conv, Linear};
use super::weights::Weights;
use super::{ModelError, Result};
use candle_core::Tensor;

/// Stride of the first block of each of EfficientNet's seven stages.
pub const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
pub const BN_EPS: f64 = 1e-5;

/// Squeeze-and-excitation: channel gates from the global mean.
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    reduce: Linear,
    expand: Linear,
}

impl SqueezeExcite {
    pub fn load(vb: &Weights) -> Result<Self> {
        Ok(SqueezeExcite { reduce: Linear::load(&vb.pp("conv_reduce"))?, expand: Linear::load(&vb.pp("conv_expand"))? })
    }

    /// Per-channel gates (N, C) from the activation's channel means (N, C);
    /// the next convolution applies them (`Conv::forward_with`), so the
    /// gated activation is never materialised.
    pub fn gate(&self, means: &Tensor) -> candle_core::Result<Tensor> {
        let s = candle_nn::ops::silu(&self.reduce.forward(means)?)?;
        candle_nn::ops::sigmoid(&self.expand.forward(&s)?)
    }
}

/// One block: timm's DepthwiseSeparableConv (stage 0) or InvertedResidual.
#[derive(Debug, Clone)]
pub enum Block {
    DepthwiseSeparable { conv_dw: Conv, se: Option<SqueezeExcite>, conv_pw: Conv, skip: bool },
    InvertedResidual { conv_pw: Conv, conv_dw: Conv, se: Option<SqueezeExcite>, conv_pwl: Conv, skip: bool },
}

impl Block {
    pub fn load(vb: &Weights, stride: usize) -> Result<Self> {
        let se = if vb.contains("se.conv_reduce.weight") { Some(SqueezeExcite::load(&vb.pp("se"))?) } else { None };
        if vb.contains("conv_pwl.weight") {
            let conv_pw = Conv::load_bn(&vb.pp("conv_pw"), &vb.pp("bn1"), BN_EPS, 1, Act::Silu)?;
            let conv_dw = Conv::load_bn(&vb.pp("conv_dw"), &vb.pp("bn2"), BN_EPS, stride, Act::Silu)?;
            let conv_pwl = Conv::load_bn(&vb.pp("conv_pwl"), &vb.pp("bn3"), BN_EPS, 1, Act::None)?;
            let skip = stride == 1 && conv_pw.in_channels == conv_pwl.out_channels;
            Ok(Block::InvertedResidual { conv_pw, conv_dw, se, conv_pwl, skip })
        } else {
            let conv_dw = Conv::load_bn(&vb.pp("conv_dw"), &vb.pp("bn1"), BN_EPS, stride, Act::Silu)?;
            let conv_pw = Conv::load_bn(&vb.pp("conv_pw"), &vb.pp("bn2"), BN_EPS, 1, Act::None)?;
            let skip = stride == 1 && conv_dw.out_channels == conv_pw.out_channels;
            Ok(Block::DepthwiseSeparable { conv_dw, se, conv_pw, skip })
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Block::DepthwiseSeparable { conv_dw, se, conv_pw, skip } => {
                let (y, gate) = Self::gated(conv_dw, se.as_ref(), x)?;
                conv_pw.forward_with(&[&y], gate.as_ref(), skip.then_some(x))
            }
            Block::InvertedResidual { conv_pw, conv_dw, se, conv_pwl, skip } => {
                let (y, gate) = Self::gated(conv_dw, se.as_ref(), &conv_pw.forward(x)?)?;
                conv_pwl.forward_with(&[&y], gate.as_ref(), skip.then_some(x))
            }
        }
    }

    /// The depthwise convolution and, with squeeze-excite, its gates (the
    /// channel means come out of the convolution itself).
    fn gated(conv_dw: &Conv, se: Option<&SqueezeExcite>, x: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        match se {
            Some(se) => {
                let (y, means) = conv_dw.forward_and_means(x)?;
                Ok((y, Some(se.gate(&means)?)))
            }
            None => Ok((conv_dw.forward(x)?, None)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EfficientNet {
    stem: Conv,
    /// Blocks per stage, flattened in order.
    blocks: Vec<Block>,
    pub stage_depths: Vec<usize>,
    /// Output channels of the stem (tells the width multiplier).
    pub stem_channels: usize,
    head: Conv,
    classifier: Linear,
}

impl EfficientNet {
    pub fn load(vb: &Weights) -> Result<Self> {
        let stem = Conv::load_bn(&vb.pp("conv_stem"), &vb.pp("bn1"), BN_EPS, 2, Act::Silu)?;
        let n_stages = vb.count_children("blocks");
        if n_stages != STAGE_STRIDES.len() {
            return Err(ModelError::BadMetadata(format!("EfficientNet has 7 stages, the weights have {n_stages}")));
        }
        let mut blocks = Vec::new();
        let mut stage_depths = Vec::new();
        for (i, &stage_stride) in STAGE_STRIDES.iter().enumerate() {
            let depth = vb.count_children(&format!("blocks.{i}"));
            stage_depths.push(depth);
            for j in 0..depth {
                let stride = if j == 0 { stage_stride } else { 1 };
                blocks.push(Block::load(&vb.pp(format!("blocks.{i}.{j}")), stride)?);
            }
        }
        let head = Conv::load_bn(&vb.pp("conv_head"), &vb.pp("bn2"), BN_EPS, 1, Act::Silu)?;
        let classifier = Linear::load(&vb.pp("classifier"))?;
        Ok(EfficientNet { stem_channels: stem.out_channels, stem, blocks, stage_depths, head, classifier })
    }

    pub fn num_classes(&self) -> usize {
        self.classifier.out_features()
    }

    /// (N, 3, H, W) normalised image -> (N, classes) logits. Any H, W >= 32.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _hot = hot_threads();
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.head.forward(&x)?;
        self.classifier.forward(&global_avg_pool(&x)?)
    }
}
