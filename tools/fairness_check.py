#!/usr/bin/env python3
"""Measures the hardening issue's queueing figures on a running pear-server
(the shipped default model, default config): run by hand, prints figures.

1. A greedy client sends 256-image 0x01 batches in a loop and disconnects
   after each; meanwhile a second client sends one image at a time: its
   latencies (max, p50) are printed.
2. A client sends 256 images and resets its connection (SO_LINGER 0): the
   server log (run it with RUST_LOG=debug and pass --log) shows when the
   cancellation happened and how many images were still inferred after it.
3. `printf ... | nc -q 2` (a half-closed client) gets all its answers.

usage: tools/fairness_check.py --port 9090 [--log server.log] [--rounds 5]
"""
import argparse, json, re, socket, struct, subprocess, threading, time
from datetime import datetime

p = argparse.ArgumentParser()
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=9090)
p.add_argument("--log", help="the server's log file (RUST_LOG=debug) for the reset figure")
p.add_argument("--rounds", type=int, default=5)
a = p.parse_args()

IMAGES = ["normal_1.jpg", "rot_1.jpg", "bruise_1.jpg", "scab_1.jpg"]


def batch(n):
    return json.dumps({"cmd": 1, "request_data": [IMAGES[i % len(IMAGES)] for i in range(n)]}).encode()


def read_answer(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("closed")
        buf += chunk
    return json.loads(buf)


stop = threading.Event()


def greedy():
    while not stop.is_set():
        s = socket.create_connection((a.host, a.port))
        s.sendall(batch(256))
        time.sleep(0.2)  # the batch is in; leave without reading
        s.close()


g = threading.Thread(target=greedy, daemon=True)
g.start()
time.sleep(0.5)
lat = []
c = socket.create_connection((a.host, a.port))
t_end = time.time() + 4 * a.rounds
while time.time() < t_end:
    t = time.perf_counter()
    c.sendall(batch(1))
    r = read_answer(c)
    assert r["response_data"][0]["error_code"] == 0, r
    lat.append(time.perf_counter() - t)
    time.sleep(0.25)
stop.set()
lat.sort()
print(f"1. single image during 256-image batches in a loop: n={len(lat)} p50={lat[len(lat)//2]*1e3:.0f} ms "
      f"max={lat[-1]*1e3:.0f} ms")
# Let the greedy client's leftovers finish, so step 2 sees only its own client.
if a.log:
    import os
    while time.time() - os.path.getmtime(a.log) < 2:
        time.sleep(0.5)
else:
    time.sleep(60)

s = socket.create_connection((a.host, a.port))
s.sendall(batch(256))
time.sleep(0.5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
t_reset = datetime.utcnow()
s.close()
time.sleep(2)
if a.log:
    text = open(a.log).read().splitlines()
    stamp = lambda l: datetime.strptime(l[1:20], "%Y-%m-%dT%H:%M:%S")
    cancel = [l for l in text if "of a broken connection" in l]
    print(f"2. reset at {t_reset:%H:%M:%S.%f}; server: {cancel[-1] if cancel else 'no cancellation logged'}")
    if cancel:
        after = [l for l in text if "inspected in" in l and stamp(l) > stamp(cancel[-1])]
        print(f"   images inferred in the seconds after the cancellation line: {len(after)}")

files = ",".join(f'"{IMAGES[i % 4]}"' for i in range(8))
out = subprocess.run(f"printf '{{\"cmd\": 0x01, \"request_data\": [{files}]}}' | nc -q 2 {a.host} {a.port}",
                     shell=True, capture_output=True, text=True, timeout=60).stdout
ans = json.loads(out)
ok = sum(1 for e in ans["response_data"] if e["error_code"] == 0)
print(f"3. printf | nc -q 2: {ok}/8 answered with error_code 0")
