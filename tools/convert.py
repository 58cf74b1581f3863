#!/usr/bin/env python3
"""Converts the original server's weight pair into a pear-server model bundle.

    python tools/convert.py --detector best-2cls.pt \
        --classifier efficientnetb3_512_version2.pth --out best-2cls.safetensors

Inputs:
  --detector    an ultralytics YOLOv8 checkpoint (`best.pt`); its `ema` or `model`
                entry is a pickled DetectionModel. Needs `ultralytics` installed.
  --classifier  a timm EfficientNet: a whole pickled module (what the original
                saved) or a state dict (optionally under `state_dict`/`model`).

The defaults reproduce the original pipeline exactly, because someone
converting their original weights expects the original's answers:
classifier input 512 (shorter side), BGR channel order (the original handed
a BGR crop to PIL as RGB), ImageNet mean/std, classes
`normal, defect_type_1 ... defect_type_7`, confidence threshold 0.9. The
detector's letterbox size is taken from the checkpoint's training arguments
(ultralytics predict does the same; 640 when none is stored).

Output: one .safetensors file; tensors keep ultralytics/timm names under
`detector.` and `classifier.`, and the metadata key `pear_bundle` holds the
JSON the server reads (see src/model/bundle.rs). The server resolves a
request for `best.pt` to `best.safetensors` in the model folder.
"""
import argparse
import json
import os
import sys

import torch


def load_detector(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = None
    if isinstance(ckpt, dict):
        model = ckpt.get("ema") or ckpt.get("model")
    elif isinstance(ckpt, torch.nn.Module):
        model = ckpt
    if model is None:
        sys.exit(f"{path}: no 'ema' or 'model' entry; is this an ultralytics checkpoint?")
    model = model.eval()
    yaml = getattr(model, "yaml", {}) or {}
    train_args = ckpt.get("train_args", {}) if isinstance(ckpt, dict) else {}
    imgsz = train_args.get("imgsz", 640)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    names = getattr(model, "names", None) or {}
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    if len(eps) != 1:
        sys.exit(f"{path}: batch norms use several eps values {eps}; not supported")
    arch = yaml.get("yaml_file", "") or ""
    if "v8" not in arch and "yolov8" not in str(yaml.get("backbone", "")):
        print(f"note: detector yaml is '{arch}'; the server implements the YOLOv8 topology", file=sys.stderr)
    stride = int(max(model.stride.float().tolist())) if hasattr(model, "stride") else 32
    # Keep the checkpoint's own precision (ultralytics stores f16): the reference
    # loads it with .float(), so storing f16 loses nothing.
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    meta = {
        "arch": "yolov8",
        "scale": str(yaml.get("scale", "")),
        "class_names": names,
        "imgsz": int(imgsz),
        "stride": stride,
        "fruit_class": 0,
        "bn_eps": float(eps.pop()),
        "conf": 0.25,
        "iou": 0.7,
        "max_det": 300,
    }
    return sd, meta


def load_classifier(path):
    obj = torch.load(path, map_location="cpu", weights_only=False)
    variant = ""
    if isinstance(obj, torch.nn.Module):
        variant = getattr(obj, "default_cfg", {}).get("architecture", "") if hasattr(obj, "default_cfg") else ""
        sd = obj.float().state_dict()
    elif isinstance(obj, dict):
        sd = obj.get("state_dict") or obj.get("model") or obj
        if isinstance(sd, torch.nn.Module):
            sd = sd.float().state_dict()
    else:
        sys.exit(f"{path}: neither a module nor a state dict")
    sd = {k.removeprefix("module."): v.float() for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if "conv_stem.weight" not in sd or "classifier.weight" not in sd:
        sys.exit(f"{path}: not a timm EfficientNet (no conv_stem/classifier weights)")
    return sd, variant, sd["classifier.weight"].shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True, help="ultralytics YOLOv8 checkpoint (.pt)")
    ap.add_argument("--classifier", required=True, help="timm EfficientNet (.pth: pickled module or state dict)")
    ap.add_argument("--out", required=True, help="bundle to write (.safetensors)")
    ap.add_argument("--classes", default=None,
                    help="comma-separated classifier class names (default: normal,defect_type_1..N-1)")
    ap.add_argument("--classifier-size", type=int, default=512, help="shorter side of the classifier input (512)")
    ap.add_argument("--channel-order", choices=["bgr", "rgb"], default="bgr",
                    help="channel order fed to the classifier (bgr reproduces the original)")
    ap.add_argument("--detector-imgsz", type=int, default=None, help="override the letterbox size")
    ap.add_argument("--confidence-threshold", type=float, default=0.9, help="suggested threshold (0.9)")
    ap.add_argument("--dtype", choices=["keep", "f32", "f16"], default="keep",
                    help="tensor storage type; keep = as stored (ultralytics saves f16, loaded as f32 by both)")
    ap.add_argument("--classifier-variant", default=None,
                    help="name stored for the classifier (default: the module's timm architecture)")
    ap.add_argument("--source", default=None, help="free text stored as the bundle's origin")
    args = ap.parse_args()

    from safetensors.torch import save_file

    det_sd, det_meta = load_detector(args.detector)
    if args.detector_imgsz:
        det_meta["imgsz"] = args.detector_imgsz
    cls_sd, variant, n_cls = load_classifier(args.classifier)
    if args.classes:
        names = [c.strip() for c in args.classes.split(",")]
    else:
        names = ["normal"] + [f"defect_type_{i}" for i in range(1, n_cls)]
    if len(names) != n_cls:
        sys.exit(f"--classes names {len(names)} classes, the classifier has {n_cls}")
    meta = {
        "format": "pear-bundle/1",
        "detector": det_meta,
        "classifier": {
            "arch": "efficientnet",
            "variant": variant,
            "class_names": names,
            "input_size": args.classifier_size,
            "channel_order": args.channel_order,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "confidence_threshold": args.confidence_threshold,
        "source": args.source or f"converted from {os.path.basename(args.detector)} + {os.path.basename(args.classifier)}",
    }
    dtype = {"keep": None, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    if args.classifier_variant:
        variant = args.classifier_variant
        meta["classifier"]["variant"] = variant
    tensors = {}
    for prefix, sd in (("detector.", det_sd), ("classifier.", cls_sd)):
        for k, v in sd.items():
            tensors[prefix + k] = (v.detach() if dtype is None else v.detach().to(dtype)).contiguous()
    save_file(tensors, args.out, metadata={"pear_bundle": json.dumps(meta)})
    size = os.path.getsize(args.out) / 1e6
    print(f"wrote {args.out} ({size:.1f} MB): detector yolov8{det_meta['scale']} imgsz {det_meta['imgsz']} "
          f"classes {det_meta['class_names']}, classifier {variant or 'efficientnet'} {n_cls} classes "
          f"at {args.classifier_size} ({args.channel_order})")


if __name__ == "__main__":
    main()
