#!/usr/bin/env python3
"""Times in PyTorch (CPU) the work that `cargo bench --bench model` and
`cargo bench --bench load` time in candle.

    python tools/bench_torch.py [--threads 2] [--onnx] [--simd avx2] [--against target/release/deps/model-HASH]
    python tools/bench_torch.py --pipeline /tmp/orig/orig-shapes.safetensors --frames /tmp/orig/frames

Layers: yolov8n at 320x256 (a 640x480 frame letterboxed at 320, conv+bn
fused as ultralytics predict does) and efficientnet_b3 at 512x740 with random
weights. Median of 10 runs after 2 warm-ups, in milliseconds.

--onnx: the same two networks exported to ONNX (opset 17) and timed in ONNX
Runtime and OpenVINO as well, with the same thread count, so one command
prints the anchors a user compares us with (pip install onnx onnxruntime
openvino). ONNX Runtime: all graph optimisations, intra-op threads =
--threads, sequential execution. OpenVINO: CPU, LATENCY hint, f32 precision
(no bf16 even where the CPU has it), its thread count = --threads.

--simd avx2: the runtimes held to AVX2 on an AVX-512 host, to set beside
`PEAR_SIMD=avx2 cargo bench --bench model`. It caps oneDNN (PyTorch's
convolutions and all of OpenVINO: ONEDNN_MAX_CPU_ISA), PyTorch's own kernels
(ATEN_CPU_CAPABILITY) and MKL's sgemm (MKL_ENABLE_INSTRUCTIONS). ONNX
Runtime's MLAS picks its kernels from CPUID and has no such switch, so its
figures stay at the native level; the line says so.

--against BIN (with --onnx): our model bench binary (`cargo bench --bench
model --no-run` names it), run for each network in turn with the two
anchors, --pairs times (PEAR_SIMD=avx2 with --simd avx2, where OpenVINO
is the only anchor), and the median of the pairs' ratios of ours to the
faster anchor printed: on a shared
host whose speed drifts within a minute, figures taken seconds apart make
a ratio that one figure each, minutes apart, does not.

--pipeline: the original server's whole per-image work on the bundle's own
weights (rebuilt by tools/bundle_to_torch.py): cv2.imread of a frame,
ultralytics predict at the bundle's letterbox size, the best fruit box at the
threshold, the int() crop, PIL resize of the BGR crop to the classifier size
(torchvision Resize, as the original), ImageNet normalisation, the timm
classifier, softmax. The original served one image at a time, so its
throughput is 1000 / this median. Make the bundle and frames with
tools/make_bench_bundle.py.
"""
import argparse
import statistics
import time

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def timeit(fn, n=10, warm=2):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def pipeline(bundle, frames, threshold, n):
    import cv2
    import numpy as np
    from PIL import Image
    from torchvision import transforms
    from ultralytics import YOLO

    import bundle_to_torch as b2t

    meta, tensors = b2t.read_bundle(bundle)
    d, c = meta["detector"], meta["classifier"]
    det_path = os.path.join(tempfile.mkdtemp(), "det.pt")
    torch.save({"model": b2t.detector(meta, tensors), "train_args": {"imgsz": d["imgsz"]}}, det_path)
    yolo = YOLO(det_path)
    cls = b2t.classifier(meta, tensors)
    tf = transforms.Compose([transforms.Resize(c["input_size"]), transforms.ToTensor(), transforms.Normalize(c["mean"], c["std"])])
    paths = sorted(os.path.join(frames, f) for f in os.listdir(frames) if f.endswith((".jpg", ".png")))
    found = 0

    def one(path):
        nonlocal found
        img = cv2.imread(path)
        res = yolo.predict(img, imgsz=d["imgsz"], conf=d["conf"], iou=d["iou"], max_det=d["max_det"], verbose=False, device="cpu")[0]
        best = None
        for xyxy, conf, k in zip(res.boxes.xyxy, res.boxes.conf, res.boxes.cls):
            if int(k) == d["fruit_class"] and float(conf) >= threshold and (best is None or float(conf) > best[1]):
                best = (xyxy, float(conf))
        if best is None:
            return None
        x1, y1, x2, y2 = (int(v) for v in best[0])
        crop = img[y1:y2, x1:x2]
        crop = crop if c["channel_order"] == "bgr" else crop[..., ::-1]
        x = tf(Image.fromarray(np.ascontiguousarray(crop))).unsqueeze(0)
        found += 1
        return int(torch.softmax(cls(x)[0], 0).argmax())

    i = iter(range(10**9))
    ms = timeit(lambda: one(paths[next(i) % len(paths)]), n=n)
    return ms, found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", metavar="BUNDLE", help="time the original's whole per-image pipeline on this bundle")
    ap.add_argument("--frames", help="folder of frames for --pipeline")
    ap.add_argument("--threshold", type=float, default=0.5, help="fruit box threshold (the bench server's, 0.5)")
    ap.add_argument("--runs", type=int, default=32, help="images timed for --pipeline")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime and OpenVINO on the same networks")
    ap.add_argument("--simd", choices=["native", "avx2"], default="native", help="hold PyTorch and OpenVINO to AVX2")
    ap.add_argument("--against", metavar="MODEL_BENCH",
                    help="with --onnx: our `cargo bench --bench model` binary (target/release/deps/model-*), timed in turn with the anchors")
    ap.add_argument("--pairs", type=int, default=8, help="rounds of --against (ours, then the anchors), for the median of their ratios")
    args = ap.parse_args()
    if args.simd == "avx2":
        # Read once, when the libraries load: set before the imports below.
        os.environ.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    global timm, torch, DetectionModel
    import timm
    import torch
    from ultralytics.nn.tasks import DetectionModel

    print(f"simd: {args.simd} (torch reports {torch.backends.cpu.get_cpu_capability()}"
          f"{'; onnxruntime stays native' if args.simd != 'native' and args.onnx else ''})", flush=True)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.pipeline:
        ms, found = pipeline(args.pipeline, args.frames, args.threshold, args.runs)
        print(f"pipeline_per_image: {ms:.1f} ms = {1000 / ms:.2f} images/s (pear found in {found} of {args.runs + 2} runs)")
        return
    # This machine's sgemm peak at this thread count, 2048^3: what the
    # networks' FLOPs would take at full GEMM speed. PyTorch's BLAS (MKL is
    # slow on AMD), and with --onnx ONNX Runtime's (MLAS); the faster counts.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = {"torch": 2 * 2048**3 / timeit(lambda: a @ b) / 1e6}
    if args.onnx:
        peak["onnxruntime"] = ort_sgemm_peak(args.threads)
    # MLAS ignores --simd: its native peak is no yardstick for an AVX2 run.
    best = max(v for k, v in peak.items() if args.simd == "native" or k != "onnxruntime")
    print(f"sgemm_peak: {', '.join(f'{k} {v:.0f}' for k, v in peak.items())} GFLOP/s; at {best:.0f}, yolov8n_320x256 "
          f"(1.62 GFLOP) would take {1620 / best:.1f} ms, efficientnet_b3_512x740 (14.8 GFLOP) {14800 / best:.1f} ms", flush=True)
    det = DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval().fuse(verbose=False)
    b3 = timm.create_model("efficientnet_b3", pretrained=False, num_classes=8).eval()
    for name, model, x in [("yolov8n_320x256", det, torch.rand(1, 3, 256, 320)), ("efficientnet_b3_512x740", b3, torch.randn(1, 3, 740, 512))]:
        row = [f"{name}: torch {timeit(lambda: model(x)):.1f} ms"]
        if args.onnx:
            runs = anchors(name, model, x, args.threads)
            row += [f"{runtime} {timeit(run):.1f} ms (max rel. diff {err:.1e})" for runtime, run, err in runs]
            if args.against:
                row.append(against(args.against, name, args.simd, runs, args.pairs))
        print(", ".join(row), flush=True)


def against(binary, name, simd, runs, pairs):
    """Our model bench for `name` and the anchors in turn, `pairs` times: on
    a shared host whose speed drifts by a quarter within a minute, the ratio
    of two figures taken seconds apart, pair by pair, holds where one figure
    each taken minutes apart does not."""
    import re
    import subprocess

    env = dict(os.environ, **({"PEAR_SIMD": "avx2"} if simd == "avx2" else {}))
    cmd = [binary, "--bench", name, "--noplot", "--warm-up-time", "1", "--measurement-time", "3"]
    ours, best, ratios = [], [], []
    for _ in range(pairs):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", out)
        if not m:
            raise SystemExit(f"no criterion time for {name} in: {out[-500:]}")
        ms = float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        # MLAS ignores --simd: held to AVX2, only OpenVINO is an anchor.
        anchor = min(timeit(run) for runtime, run, _ in runs if simd == "native" or runtime != "onnxruntime")
        ours.append(ms)
        best.append(anchor)
        ratios.append(ms / anchor)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return (f"ours {statistics.median(ours):.1f} ms against the faster anchor {statistics.median(best):.1f} ms in turn, "
            f"{pairs} pairs: ratio median {statistics.median(ratios):.2f} (quartiles {q[0]:.2f}-{q[2]:.2f}, "
            f"range {min(ratios):.2f}-{max(ratios):.2f})")


def ort_sgemm_peak(threads, n=2048):
    """GFLOP/s of one n^3 MatMul in ONNX Runtime."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feed = {k: np.random.rand(n, n).astype(np.float32) for k in "ab"}
    return 2 * n**3 / timeit(lambda: sess.run(None, feed)) / 1e6


def anchors(name, model, x, threads):
    """ONNX Runtime and OpenVINO on the model exported to ONNX, as (name,
    run, max relative difference to torch's output) each, so that a fast
    wrong answer is seen beside its time."""
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    path = os.path.join(tempfile.mkdtemp(), f"{name}.onnx")
    torch.onnx.export(model, (x,), path, opset_version=17, input_names=["x"], dynamo=False)
    want = model(x)
    want = (want[0] if isinstance(want, (tuple, list)) else want).numpy()
    feed = x.numpy()

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    run_ort = lambda: sess.run(None, {"x": feed})[0]
    compiled = ov.Core().compile_model(path, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    run_ov = lambda: req.infer({0: feed})[compiled.output(0)]
    runs = []
    for runtime, run in [("onnxruntime", run_ort), ("openvino", run_ov)]:
        err = float(np.abs(run() - want).max() / (np.abs(want).max() + 1e-6))
        runs.append((runtime, run, err))
    return runs


if __name__ == "__main__":
    main()
