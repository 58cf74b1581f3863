#!/usr/bin/env python3
"""What a kill -9 costs the journal: rows missing vs answers the clients got.

Starts pear-server (release build) with the shipped server.toml and a fresh
journal, loads it from 4 connections (one image per request), kills it with
SIGKILL after a few seconds, then compares the journal's rows with the
answers received. The README's bound: at most the answers of the last
journal.batch_ms (200 ms) are missing. Run: tools/journal_kill9.py [runs]
"""
import json, os, shutil, signal, socket, sqlite3, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PEAR_SERVER", os.path.join(ROOT, "target/release/pear-server"))
FILES = ["normal_1.jpg", "rot_1.jpg", "bruise_1.jpg", "scab_1.jpg", "no_pear_1.jpg"]


def client(port, i, answered, stop):
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""
    k = 0
    try:
        while not stop.is_set():
            f = FILES[(i + k) % len(FILES)]
            k += 1
            s.sendall(json.dumps({"cmd": 1, "request_data": [f]}).encode() + b"\n")
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            json.loads(line)
            answered.append(time.monotonic())
    except OSError:
        return


def run(seconds):
    work = tempfile.mkdtemp(prefix="pear-kill9-")
    cfg = open(os.path.join(ROOT, "server.toml")).read()
    cfg = cfg.replace('path = "journal/inspections.sqlite"', f'path = "{work}/inspections.sqlite"')
    cfg = cfg.replace('dir = "weights"', f'dir = "{ROOT}/weights"').replace('dir = "samples"', f'dir = "{ROOT}/samples"')
    cfg = cfg.replace('["weights"]', f'["{ROOT}/weights"]').replace('["samples"]', f'["{ROOT}/samples"]')
    cfg = cfg.replace('listen = "127.0.0.1:9091"', 'listen = "127.0.0.1:0"')
    open(os.path.join(work, "server.toml"), "w").write(cfg)
    p = subprocess.Popen([BIN, "--config", os.path.join(work, "server.toml"), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = int(p.stdout.readline().decode().rsplit(":", 1)[1])
    answered, stop = [], threading.Event()
    threads = [threading.Thread(target=client, args=(port, i, answered, stop)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)  # the load's length is the scenario
    killed = time.monotonic()
    p.send_signal(signal.SIGKILL)
    p.wait()
    stop.set()
    for t in threads:
        t.join()
    got = len([t for t in answered if t <= killed])
    last_200ms = len([t for t in answered if killed - 0.2 < t <= killed])
    db = sqlite3.connect(os.path.join(work, "inspections.sqlite"))
    ok = db.execute("PRAGMA quick_check").fetchone()[0]
    rows = db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
    shutil.rmtree(work)
    return got, rows, last_200ms, ok


if __name__ == "__main__":
    for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        got, rows, bound, ok = run(4.0)
        print(f"run {i + 1}: answers received {got}, journal rows {rows}, missing {got - rows}, "
              f"answered in the last 200 ms {bound}, quick_check {ok}")
