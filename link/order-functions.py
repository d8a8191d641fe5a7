#!/usr/bin/env python3
"""Makes link/functions.order: the functions a serving agent runs, most instructions first.

`build.rs` hands the list to the linker, which lays those functions out first and together, so the few MB
an agent runs are not spread over 63 MB of code (the kernel maps code in 64 KiB runs around each page
touched). How the list is made, so anyone can make it again after the code or the toolchain changed:

1. build the release binary with its symbols (`PVEDEPLOY_KEEP_SYMBOLS=1`; same names as the stripped one);
2. run it under `valgrind --tool=callgrind` (exact: every function that ran, not a sample) on an empty data
   directory with a 64 KiB memtable, so a few hundred writes also flush and compact tables, and serve what
   the API bench asks (creates, reads by id, deletes, pages with every filter, cursors, offset, status,
   metrics, the OpenAPI document and its page, the dashboard), then idle for the timers;
3. dump, `kill -9`, start it again on the same directory (the write-ahead log replayed, the crash path),
   serve a few reads, stop it cleanly;
4. write the functions of the binary that ran, by instructions spent, most first.

Usage: python3 link/order-functions.py   (from the repository root; needs valgrind, cargo, about 15 minutes)
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "order-functions-token-0123456789"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build() -> str:
    env = dict(os.environ, PVEDEPLOY_KEEP_SYMBOLS="1")
    subprocess.run(["cargo", "build", "--release", "--bin", "pvedeploy"], cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "pvedeploy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(self, binary: str, work: str, tag: str, started: list):
        self.port = free_port()
        self.out = os.path.join(work, f"callgrind.{tag}")
        data = os.path.join(work, "data")
        env = dict(
            os.environ,
            PVEDEPLOY_ADMIN_TOKEN=TOKEN,
            PVEDEPLOY_PROXMOX_MODE="none",
            PVEDEPLOY_DATABASE_URL=f"surrealkv://{data}/db?max_memtable_size=65536",
            RUST_LOG="warn",
        )
        env.pop("RUST_BACKTRACE", None)
        cmd = ["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no", f"--callgrind-out-file={self.out}.%p",
               binary, "--config", os.path.join(work, "pvedeploy.toml"), "serve", "--listen", f"127.0.0.1:{self.port}",
               "--data-dir", data]
        self.log = open(os.path.join(work, f"agent.{tag}.log"), "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        started.append(self)
        deadline = time.time() + 900
        while self.request("GET", "/api/v1/ready")[0] != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.flush()
                tail = open(self.log.name).read()[-4000:]
                sys.exit(f"the agent did not become ready in 15 minutes; its last output:\n{tail}")
            time.sleep(2)

    def request(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def dump(self):
        subprocess.run(["callgrind_control", "--dump", str(self.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(5)


def serve(agent: Agent, writes: int):
    ids = []
    for i in range(writes):
        framework = ["django", "flask", "node", "static"][i % 4]
        status, body = agent.request("POST", "/api/v1/deployments",
                                     {"name": f"app-{i}", "repo_url": "http://127.0.0.1:9/octo/app", "framework": framework})
        if status == 202:
            ids.append(json.loads(body)["id"])
    if len(ids) < writes:
        sys.exit(f"only {len(ids)} of {writes} creates were accepted")
    for i in ids:
        agent.request("GET", f"/api/v1/deployments/{i}")
    for i in ids[::3]:
        agent.request("DELETE", f"/api/v1/deployments/{i}")
    for f in ["", "&status=destroyed", "&framework=node", "&status=destroyed&framework=static", "&name=app-9"]:
        status, body = agent.request("GET", f"/api/v1/deployments?limit=100{f}")
        cursor = json.loads(body).get("next_cursor") if status == 200 else None
        if cursor:
            agent.request("GET", f"/api/v1/deployments?limit=100{f}&after={cursor}")
    agent.request("GET", "/api/v1/deployments?limit=100&offset=100")
    for path in ["/api/v1/status", "/api/v1/metrics", "/api/v1/openapi.json", "/docs/", "/", "/health"]:
        agent.request("GET", path)
    return ids


def order(paths):
    """Functions of the pvedeploy binary that ran, by instructions spent in them (callgrind's self cost)."""
    cost = collections.Counter()
    for path in paths:
        names, objects = {}, {}
        ob = fn = None
        after_call = False
        for line in open(path):
            if line.startswith(("ob=", "cob=")):
                m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
                if m.group(2):
                    objects[m.group(1)] = m.group(2).strip()
                if line.startswith("ob="):
                    ob = objects.get(m.group(1))
            elif line.startswith(("fn=", "cfn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
                if m.group(2):
                    # callgrind names a recursion's inner calls `name'2`, `name'3`: the same function
                    names[m.group(1)] = re.sub(r"'\d+$", "", m.group(2).strip())
                if line.startswith("fn="):
                    fn = names[m.group(1)] if ob and ob.endswith("/pvedeploy") else None
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost, not this function's
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif fn:
                    parts = line.split()
                    if len(parts) >= 2:
                        cost[fn] += int(parts[1])
    # what callgrind could not name (`0x…`, `(below main)`) is no symbol the linker knows
    return [name for name, _ in cost.most_common() if re.fullmatch(r"[A-Za-z_.$][A-Za-z0-9_.$]*", name)]


def main():
    binary = build()
    with tempfile.TemporaryDirectory(prefix="order-functions-") as work:
        with open(os.path.join(work, "pvedeploy.toml"), "w") as f:
            f.write('[repos]\nallowed_hosts = ["127.0.0.1:9"]\nschemes = ["http"]\n')
        agents = []
        try:
            first = Agent(binary, work, "first", agents)
            ids = serve(first, 300)
            time.sleep(20)
            first.dump()
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
            second = Agent(binary, work, "second", agents)
            for i in ids[:50]:
                second.request("GET", f"/api/v1/deployments/{i}")
            second.request("GET", "/api/v1/deployments?limit=100")
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait(timeout=600)
        finally:
            # whatever went wrong, no agent is left running: killed by the pid it was started with
            for agent in agents:
                if agent.proc.poll() is None:
                    agent.proc.kill()
                    agent.proc.wait()
        outs = sorted(os.path.join(work, f) for f in os.listdir(work) if f.startswith("callgrind."))
        names = order(outs)
    with open(os.path.join(ROOT, "link", "functions.order"), "w") as f:
        f.write("".join(f"{n}\n" for n in names))
    print(f"link/functions.order: {len(names)} functions")


if __name__ == "__main__":
    main()
