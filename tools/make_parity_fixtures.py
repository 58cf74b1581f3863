#!/usr/bin/env python3
"""Reference outputs of the real PyTorch pipeline, for `cargo test` (tests/parity.rs).

    python tools/make_parity_fixtures.py --detector DET.pt --classifier CLS.pth \
        --bundle weights/pear-default.safetensors --out tests/fixtures/parity

The bundle must be the conversion of DET.pt + CLS.pth; its metadata gives the
settings (letterbox size, classifier size, channel order, threshold), so the
reference runs exactly what the bundle claims. For each of 8 PNG images of
different sizes and aspect ratios (written to --out as PNG, lossless so
decoding cannot differ; or with --format jpg as JPEG, quality --quality, which
both pipelines must then decode as OpenCV's imread does) it records:
  raw_<i>      the detector's raw output (4 + classes, anchors) on ultralytics'
               own LetterBox of the image (safetensors, f32)
  boxes        ultralytics predict() final boxes (conf 0.25, IoU 0.7), image pixels
  logits       timm classifier logits on the original pipeline's crop
                (best fruit box >= threshold, int() crop, PIL resize via
                torchvision Resize, ImageNet normalisation)
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_pears import make_image  # noqa: E402

SIZES = [(256, 256), (512, 384), (300, 200), (200, 320), (640, 360), (150, 400), (333, 517), (97, 131)]


def read_meta(bundle):
    from safetensors import safe_open

    with safe_open(bundle, "pt") as f:
        return json.loads(f.metadata()["pear_bundle"])


def classifier_input(crop_bgr, meta):
    from PIL import Image
    from torchvision import transforms

    c = meta["classifier"]
    arr = crop_bgr if c["channel_order"] == "bgr" else crop_bgr[..., ::-1]
    pil = Image.fromarray(np.ascontiguousarray(arr))  # the original's quirk when "bgr"
    tf = transforms.Compose([
        transforms.Resize(c["input_size"]),
        transforms.ToTensor(),
        transforms.Normalize(c["mean"], c["std"]),
    ])
    return tf(pil).unsqueeze(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--format", choices=["png", "jpg"], default="png")
    ap.add_argument("--quality", type=int, default=92, help="JPEG quality (--format jpg)")
    args = ap.parse_args()
    from safetensors.torch import save_file
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    torch.set_grad_enabled(False)
    meta = read_meta(args.bundle)
    det_meta = meta["detector"]
    thr = meta.get("confidence_threshold") or 0.5
    os.makedirs(args.out, exist_ok=True)
    yolo = YOLO(args.detector)
    det_model = torch.load(args.detector, map_location="cpu", weights_only=False)
    det_model = (det_model.get("ema") or det_model["model"]).float().eval()
    cls_model = torch.load(args.classifier, map_location="cpu", weights_only=False)
    if not isinstance(cls_model, torch.nn.Module):
        sys.exit("--classifier must be a pickled module for fixtures")
    cls_model = cls_model.float().eval()

    records, raws = [], {}
    i = 0
    k = 0
    while len(records) < len(SIZES):
        rng = np.random.default_rng([args.seed, k])
        k += 1
        img, boxes, cls, _ = make_image(rng)
        if len(records) < len(SIZES) - 1 and cls is None:
            continue  # most fixtures should exercise the classifier; the last may be empty
        w, h = SIZES[len(records)]
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        name = f"parity_{len(records)}_{w}x{h}.{args.format}"
        path = os.path.join(args.out, name)
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, args.quality] if args.format == "jpg" else [])
        img = cv2.imread(path)
        lb = LetterBox(det_meta["imgsz"], auto=True, stride=det_meta["stride"])(image=img)
        x = torch.from_numpy(np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1))).float().unsqueeze(0) / 255
        raw = det_model(x)
        raw = raw[0] if isinstance(raw, (list, tuple)) else raw
        raws[f"raw_{i}"] = raw[0].float().contiguous()
        res = yolo.predict(path, conf=det_meta["conf"], iou=det_meta["iou"], imgsz=det_meta["imgsz"],
                           max_det=det_meta["max_det"], verbose=False, device="cpu")[0]
        b = res.boxes
        final = [[*map(float, xyxy), float(c), int(k_)] for xyxy, c, k_ in zip(b.xyxy, b.conf, b.cls)]
        fruit = [f for f in final if f[5] == det_meta["fruit_class"] and f[4] >= thr]
        rec = {"file": name, "width": w, "height": h, "input_hw": list(lb.shape[:2]), "boxes": final,
               "crop": None, "classifier_input_hw": None, "logits": None, "class": None}
        if fruit:
            best = max(fruit, key=lambda f: f[4])
            x1, y1, x2, y2 = (int(v) for v in best[:4])
            crop = img[y1:y2, x1:x2]
            if crop.size:
                t = classifier_input(crop, meta)
                logits = cls_model(t)[0]
                rec.update(crop=[x1, y1, x2, y2], classifier_input_hw=list(t.shape[2:]),
                           logits=[float(v) for v in logits], **{"class": int(logits.argmax())})
        records.append(rec)
        print(name, "boxes", len(final), "class", rec["class"], flush=True)
        i += 1
    save_file(raws, os.path.join(args.out, "raw.safetensors"))
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump({"bundle": os.path.basename(args.bundle), "confidence_threshold": thr, "images": records}, f, indent=1)


if __name__ == "__main__":
    main()
