"""Reading and writing a big workbook in a child process, so the review server keeps answering.

openpyxl is pure Python: reading a 100,000-row sheet takes ~20 s of CPU, rewriting it a minute and
~500 MB. Done in a thread of the server process, that work holds the interpreter lock most of the
time and every click waits for it. So for workbooks over `CHILD_PROCESS_BYTES` the function runs in
a fresh interpreter (`python -c`, arguments and result pickled through its stdin/stdout) and its
memory goes when it ends; small ones, where the work takes milliseconds, run in the caller.

    snapshot = run(read_snapshot, path, big=size > CHILD_PROCESS_BYTES)

An `EditForgeError` raised in the child is raised again here; a child that dies says so in one line.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any, Callable

from editforge.errors import EditForgeError

CHILD_PROCESS_BYTES = 256 * 1024  # ~5,000 rows: about a second of openpyxl work, where a child's start pays off
_CHILD = "from editforge.review.worker import child_main; child_main()"


def is_big(path: os.PathLike) -> bool:
    try:
        return os.path.getsize(path) > CHILD_PROCESS_BYTES
    except OSError:
        return False


def run(function: Callable, *args: Any, big: bool, detach: bool = False, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, in a child process when `big`. `function` must be importable by
    name. `detach`: the child gets its own session, so a Ctrl-C meant for the server does not stop it
    halfway (a workbook write: the server waits for it, then writes what is left)."""
    if not big:
        return function(*args, **kwargs)
    request = pickle.dumps((function.__module__, function.__qualname__, args, kwargs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the modules this process has
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=request, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=detach, env=env)
    try:
        ok, value = pickle.loads(proc.stdout)
    except Exception:  # killed (out of memory, say), or it printed something else
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise EditForgeError(f"{function.__name__} failed in its child process (exit {proc.returncode}"
                             f"{': ' + why[-1] if why else ''})") from None
    if not ok:
        raise value
    return value


def child_main() -> None:
    """The child's side: one pickled call from stdin, its pickled outcome to stdout."""
    from importlib import import_module

    module, name, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    out, sys.stdout = sys.stdout.buffer, sys.stderr  # anything printed meanwhile must not spoil the answer
    try:
        outcome = True, getattr(import_module(module), name)(*args, **kwargs)
    except EditForgeError as exc:
        outcome = False, exc
    out.write(pickle.dumps(outcome))
