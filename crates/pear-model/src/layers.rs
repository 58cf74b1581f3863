//! Convolution building blocks shared by both networks.
//!
//! Batch norm is folded into the preceding convolution at load time
//! (w' = w * g/sqrt(v+eps), b' = beta - mean * g/sqrt(v+eps)): the same function,
//! one pass fewer. Dense convolutions run through our GEMM kernel and
//! depthwise ones through our direct kernel, both with bias and SiLU fused.
//! Both kernels are CPU code: the model runs on the CPU only (a tensor on
//! another device is refused at load).

use super::depthwise::DepthwiseConv2d;
use super::gemm_conv::GemmConv2d;
use super::weights::Weights;
use super::{ModelError, Result};
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Silu,
}

#[derive(Debug, Clone)]
enum Kind {
    /// groups = 1: bias and SiLU fused in the kernel.
    Gemm(GemmConv2d),
    /// One input channel per group: bias and SiLU fused in the kernel.
    Depthwise(DepthwiseConv2d),
}

/// A convolution with its batch norm folded in, and an activation.
#[derive(Debug, Clone)]
pub struct Conv {
    kind: Kind,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl Conv {
    /// Conv without bias at `conv.weight`, batch norm at `bn` (eps given), padding k/2.
    pub fn load_bn(conv: &Weights, bn: &Weights, eps: f64, stride: usize, act: Act) -> Result<Self> {
        let (w, b) = fold_bn(conv, bn, eps)?;
        Self::from_parts(w, b, stride, act)
    }

    /// Plain convolution with bias (`weight`, `bias`), padding k/2.
    pub fn load_plain(vb: &Weights, stride: usize, act: Act) -> Result<Self> {
        let w = vb.get_rank("weight", 4)?;
        let b = vb.get_shape("bias", &[w.dim(0)?])?;
        Self::from_parts(w, b, stride, act)
    }

    pub fn from_parts(w: Tensor, b: Tensor, stride: usize, act: Act) -> Result<Self> {
        let (o, i_per_group, kh, kw) = w.dims4()?;
        if kh != kw {
            return Err(ModelError::BadMetadata(format!("non-square kernel {kh}x{kw}")));
        }
        let pad = kh / 2;
        if !w.device().is_cpu() {
            return Err(ModelError::BadMetadata("the model runs on the CPU only".into()));
        }
        let silu = act == Act::Silu;
        let (kind, in_channels) = if i_per_group == 1 && o > 1 {
            (Kind::Depthwise(DepthwiseConv2d::new(&w, &b, stride, pad, silu)?), o)
        } else {
            (Kind::Gemm(GemmConv2d::new(&w, &b, stride, pad, silu)?), i_per_group)
        };
        Ok(Conv { kind, in_channels, out_channels: o })
    }

    /// The convolution of the channel-concatenation of `parts`, with input
    /// channels scaled by `gate` (N, I) when given, plus `residual` after the
    /// activation. Our CPU kernel does all of it without materialising the
    /// concatenation, the scaled input or the sum.
    pub fn forward_with(&self, parts: &[&Tensor], gate: Option<&Tensor>, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if let Kind::Gemm(op) = &self.kind {
            return op.run(parts, gate, residual);
        }
        let mut x = Tensor::cat(parts, 1)?;
        if let Some(g) = gate {
            let (n, c) = g.dims2()?;
            x = x.broadcast_mul(&g.reshape((n, c, 1, 1))?)?;
        }
        let y = self.forward(&x)?;
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            Kind::Gemm(op) => op.forward(x),
            Kind::Depthwise(op) => op.forward(x),
        }
    }

    /// The output and its planes' means (N, C), as squeeze-excite needs.
    pub fn forward_and_means(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        match &self.kind {
            Kind::Depthwise(op) => op.forward_and_means(x),
            Kind::Gemm(op) => {
                let y = op.forward(x)?;
                let means = global_avg_pool(&y)?;
                Ok((y, means))
            }
        }
    }
}

/// The weight at `conv.weight` (bias-free) with the batch norm at `bn`
/// folded in, and the bias that leaves.
pub fn fold_bn(conv: &Weights, bn: &Weights, eps: f64) -> Result<(Tensor, Tensor)> {
    let w = conv.get_rank("weight", 4)?;
    let (o, ..) = w.dims4()?;
    let gamma = bn.get_shape("weight", &[o])?;
    let beta = bn.get_shape("bias", &[o])?;
    let mean = bn.get_shape("running_mean", &[o])?;
    let var = bn.get_shape("running_var", &[o])?;
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let w = w.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
    let b = (beta - (mean * &scale)?)?;
    Ok((w, b))
}

/// Fully connected layer `y = x W^T + b` for (N, in) inputs.
#[derive(Debug, Clone)]
pub struct Linear {
    wt: Tensor,
    b: Tensor,
}

impl Linear {
    /// From a (out, in) weight, or a (out, in, 1, 1) 1x1-conv weight.
    pub fn load(vb: &Weights) -> Result<Self> {
        let w = vb.get("weight")?;
        let w = match w.rank() {
            2 => w,
            4 => w.flatten_from(1)?,
            _ => return Err(ModelError::BadShape { name: "weight".into(), expected: "rank 2 or 4".into(), got: w.dims().to_vec() }),
        };
        let b = vb.get_shape("bias", &[w.dim(0)?])?;
        Ok(Linear { wt: w.t()?.contiguous()?, b })
    }

    pub fn out_features(&self) -> usize {
        self.b.dims()[0]
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.wt)?.broadcast_add(&self.b)
    }
}

/// Mean over the spatial dims: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    super::cpu::global_avg_pool(x)
}
