#!/usr/bin/env python3
"""Rebuilds the PyTorch models a bundle was converted from.

    python tools/bundle_to_torch.py --bundle weights/pear-default.safetensors \
        --detector-out /tmp/det.pt --classifier-out /tmp/cls.pth

The inverse of tools/convert.py: tensors keep ultralytics/timm names, so an
ultralytics DetectionModel of the bundle's scale and a timm EfficientNet of its
variant take them back with strict loading (any missing or unexpected tensor
stops the script). The outputs are what the reference tools take
(make_parity_fixtures.py, bench_torch.py): an ultralytics checkpoint that
`YOLO(path)` loads (its train_args carry the bundle's imgsz) and a whole
pickled timm module, like the original's .pth. Use it to make references for
a bundle whose source checkpoints are not at hand (the shipped default's are
the output of tools/train_default.py, not committed).
"""
import argparse
import json
import re

import torch


def read_bundle(path):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["pear_bundle"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def part(tensors, prefix):
    return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def detector(meta, tensors):
    from ultralytics.nn.tasks import DetectionModel

    d = meta["detector"]
    model = DetectionModel(f"yolov8{d['scale'] or 'n'}.yaml", nc=len(d["class_names"]), verbose=False)
    model.load_state_dict(part(tensors, "detector."), strict=True)
    model.names = dict(enumerate(d["class_names"]))
    return model.eval()


def classifier(meta, tensors, variant=None):
    import timm
    from timm.models.efficientnet import _gen_efficientnet

    c = meta["classifier"]
    n = len(c["class_names"])
    variant = variant or c.get("variant") or ""
    m = re.fullmatch(r"(efficientnet_b\d) scaled to width ([\d.]+), depth ([\d.]+)", variant)
    if m:
        model = _gen_efficientnet(m[1], channel_multiplier=float(m[2]), depth_multiplier=float(m[3]), num_classes=n)
    else:
        model = timm.create_model(variant, pretrained=False, num_classes=n)
    model.load_state_dict(part(tensors, "classifier."), strict=True)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--detector-out", required=True)
    ap.add_argument("--classifier-out", help="omit to rebuild the detector only")
    ap.add_argument("--classifier-variant", default=None,
                    help="timm model name when the bundle's variant text is not one (e.g. efficientnet_b3)")
    args = ap.parse_args()
    meta, tensors = read_bundle(args.bundle)
    det = detector(meta, tensors)
    torch.save({"model": det, "train_args": {"imgsz": meta["detector"]["imgsz"]}}, args.detector_out)
    print(f"wrote {args.detector_out}")
    if args.classifier_out:
        torch.save(classifier(meta, tensors, args.classifier_variant), args.classifier_out)
        print(f"wrote {args.classifier_out}")


if __name__ == "__main__":
    main()
