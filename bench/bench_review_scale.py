"""The review app on a big workbook: start-up, first page, polls, pages, verdict clicks, memory.

    python bench/bench_review_scale.py [--rows 100000] [--verdicts 100] [--pause 0.25] [--data DIR]

Builds the workbook once under --data (bench/review_fixture.py: 100,000 rows as synth leaves them,
60% generated with journal entries, some reviewed, some waiting for synth) and copies it for each
run (pictures hard-linked). Starts `editforge review` as a user does, in its own process, and talks
HTTP to it like the page: times are wall-clock round trips on localhost, so they include the HTTP
stack and are an upper bound on the server's time. A click is the verdict POST; the page then
fetches the page that follows (`after=`), timed on its own. Verdicts come --pause seconds apart (a
fast reviewer), so the app's writer rewrites the workbook while they come in, as it would in use.
Ctrl-C at the end: the app writes what is still queued, and the workbook is checked for every verdict.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import openpyxl

sys.path.insert(0, str(Path(__file__).parent))
from review_fixture import build  # noqa: E402


class Client:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port, self.token = parts.hostname, parts.port, parts.query.removeprefix("token=")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def request(self, method: str, path: str, body=None) -> tuple[float, int, bytes]:
        headers = {"Cookie": f"editforge_review_{self.port}={self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body).encode()
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return seconds, response.status, data

    def json(self, method: str, path: str, body=None) -> tuple[float, dict, int]:
        seconds, _, data = self.request(method, path, body)
        return seconds, json.loads(data), len(data)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def copy_fixture(source: Path, work: Path) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for folder in ("img", "generated"):
        shutil.copytree(source / folder, work / folder, copy_function=os.link)
    for name in ("big.xlsx", "big.xlsx.journal.sqlite"):
        shutil.copy2(source / name, work / name)
    return work / "big.xlsx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--verdicts", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between verdicts")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "editforge-bench-review")
    args = parser.parse_args()

    started = time.perf_counter()
    fixture = build(args.data / f"fixture-{args.rows}", args.rows).parent
    print(f"fixture: {fixture} ({time.perf_counter() - started:.1f} s to build or find)")
    path = copy_fixture(fixture, args.data / "run")

    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "editforge", "review", str(path), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if " on http" not in line:
            sys.exit(f"the app did not start: {line}{server.stderr.read()}")
        startup = time.perf_counter() - started
        client = Client(line.split(" on ")[1].split()[0])
        print(f"start-up (read {args.rows:,} rows, build the index, listen): {startup:.1f} s; "
              f"memory {memory_mb(server.pid)[0]:.0f} MB")

        html, _, _ = client.request("GET", "/")
        script, _, _ = client.request("GET", "/static/review.js")
        first, data, size = client.json("GET", "/api/rows")
        print(f"first page: page {ms(html)} + script {ms(script)} + rows {ms(first)} "
              f"({len(data['rows'])} of {data['total']:,} rows, {size / 1024:.0f} KB) = {ms(html + script + first)}")

        polls = [client.json("GET", "/api/state")[0] for _ in range(20)]
        print(f"poll /api/state: median {ms(statistics.median(polls))}, max {ms(max(polls))}")
        for query in ("status=pending", "mode=gen_raw&sort=-contrast", "status=accepted&sort=change&around=50002",
                      "contrast_max=30&sort=contrast", "after=99000"):
            seconds, data, size = client.json("GET", f"/api/rows?{query}")
            print(f"page ?{query}: {ms(seconds)} ({len(data['rows'])} of {data['total']:,}, {size / 1024:.0f} KB)")

        _, data, _ = client.json("GET", "/api/rows?status=pending&limit=1000")
        todo = [r for r in data["rows"] if r["generated"]][: args.verdicts]
        clicks, pages = [], []
        started = time.perf_counter()
        for i, row in enumerate(todo):
            verdict = "rejected" if i % 4 == 3 else "accepted"
            seconds, _, _ = client.json("POST", f"/api/rows/{row['row']}/verdict",
                                        {"verdict": verdict, "seen": row["images"], "row_id": row["row_id"]})
            clicks.append(seconds)
            pages.append(client.json("GET", f"/api/rows?status=pending&after={row['row']}")[0])
            time.sleep(args.pause)
        elapsed = time.perf_counter() - started
        _, state, _ = client.json("GET", "/api/state")
        now, peak = memory_mb(server.pid)
        print(f"{len(clicks)} verdicts in {elapsed:.1f} s ({args.pause} s apart): verdict median {ms(statistics.median(clicks))}, "
              f"p95 {ms(sorted(clicks)[int(len(clicks) * 0.95) - 1])}, max {ms(max(clicks))}; the next page after each: "
              f"median {ms(statistics.median(pages))}, max {ms(max(pages))}")
        print(f"after them: summary {state['summary']}, {state['waiting_updates']} not in the file yet; "
              f"memory {now:.0f} MB (peak {peak:.0f} MB)")

        started = time.perf_counter()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=1800)
        print(f"Ctrl-C to exit (writes what is queued): {time.perf_counter() - started:.1f} s, exit {server.returncode}")
    finally:
        if server.poll() is None:
            server.kill()
    book = openpyxl.load_workbook(path, read_only=True)
    ws = book.active
    header = [c.value for c in next(ws.iter_rows(max_row=1))]
    review, rows = header.index("review"), {r["row"]: i for i, r in enumerate(todo)}
    landed = sum(1 for number, values in enumerate(ws.iter_rows(min_row=2, values_only=True), 2)
                 if number in rows and values[review] == ("rejected" if rows[number] % 4 == 3 else "accepted"))
    book.close()
    print(f"verdicts in the workbook: {landed}/{len(todo)}")
    print(f"python {platform.python_version()}, openpyxl {openpyxl.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cores, {platform.system()} {platform.release()}")


if __name__ == "__main__":
    main()
