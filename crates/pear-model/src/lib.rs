//! The two-stage model, pure math: YOLOv8 finds the pear, EfficientNet judges it.
//! Knows nothing of sockets or threads beyond its own kernels' rayon pool.
//!
//! `decode` turns image files into the pixels the original's OpenCV saw,
//! `annotate` draws an inspection onto its image;
//! `bundle` reads the one-file model format, `weights` hands tensors to the
//! layers, `yolo` and `efficientnet` are the networks (candle, one struct per
//! layer), `depthwise` and `gemm_conv` are our CPU convolution kernels, `sgemm`
//! the GEMM under the dense one, `pool`, `upsample` and `dfl` (YOLO's box
//! decoding) the kernels between them, `simd` the SIMD level they all run at
//! (`PEAR_SIMD` lowers it),
//! `preprocess` and `nms` reproduce ultralytics' and PIL's image handling bit
//! for bit, and
//! `pipeline` strings them together the way the original server did;
//! `profile` times the convolutions layer by layer for the benches.

pub mod annotate;
pub mod decode;

mod activation;
pub mod bundle;
pub mod cpu;
mod depthwise;
mod dfl;
pub mod efficientnet;
mod gemm_conv;
mod layers;
mod nms;
pub mod pipeline;
mod pool;
mod preprocess;
pub mod profile;
pub mod sgemm;
pub mod simd;
mod split_rows;
mod upsample;
pub mod weights;
mod winograd;
pub mod yolo;

pub use bundle::{Bundle, BundleMeta};
pub use pipeline::{Inspection, Pipeline};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a pear-server model bundle: {0}")]
    NotABundle(String),
    #[error("model bundle is missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected}")]
    BadShape { name: String, expected: String, got: Vec<usize> },
    #[error("invalid model metadata: {0}")]
    BadMetadata(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// NaN or infinity out of a network: never turned into a class.
    #[error("{0} produced non-finite outputs (NaN or infinity); the model's weights are broken")]
    NonFinite(&'static str),
    /// The crop the classifier would get is beyond the memory budget of one image.
    #[error("{0}")]
    CropTooLarge(String),
    #[error("model loads but cannot infer: {0}")]
    SmokeTest(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
