"""synth's pictures made on a Ray cluster: one worker per GPU, each loading the model once.

    engine = RayEngine("auto", gpus_per_worker=1)   # "local": a cluster in this process; "auto"/"HOST:PORT": join one
    engine.connect()                                # before the workbook is touched: a missing cluster is one line
    summary = synth("data.xlsx", make_generator, options, engine=engine)

This process (the driver) stays the only writer of the journal, the workbook and the PNGs (see
`editforge.sheet.synth`): a worker gets a `Request` (input file bytes, prompt, seed) and answers with an
`Outcome` (the PNG file's bytes), so the workers' machines need the model, not the workbook's folder.

Why actors and not Ray Data: a worker is a Ray actor holding the pipeline, fed directly with at most
`in_flight` requests at a time (one being made, one waiting, so a GPU never idles on the driver). That keeps
what synth needs in this file's hands: a request journaled before it goes out and written the moment it comes
back, in any order; a dead worker's requests known by name and sent to another worker; a row that kills
workers counted and failed. Ray Data's `map_batches` streams a dataset through an actor pool with its own
retries, batching and ordering, behind which a row's fate (retried? twice?) is not visible to the journal.

Faults: a worker that dies (killed, out of host memory, its node lost) is replaced by a new one, and its
requests go back to the queue. The row it was making when it died (its oldest request: an actor works through
its requests in order) is counted; one that has taken `max_deaths` workers down fails with the reason instead
of killing more. A worker that cannot start (the model does not load) stops the run with that worker's error.
"""

from __future__ import annotations

import os
import socket
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from editforge.errors import EditForgeError
from editforge.sheet.engine import Generator, Outcome, Request, describe, make_picture, start_generator

IN_FLIGHT = 2  # requests per worker: the one it makes and the next, ready when it finishes
MAX_DEATHS = 3  # workers a row may kill before it fails


class _Worker:
    """A Ray actor: one loaded model, making one picture after another."""

    def __init__(self, make_generator: Callable[[], Generator], judge: bool):
        self.generate, self.error = None, None
        try:
            self.generate = start_generator(make_generator, judge)
        except EditForgeError as exc:  # the model's one line (not cached here, a bad LoRA), as on one machine
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - told to the driver, which stops the run with it
            self.error = describe(exc)

    def ready(self) -> tuple[int, str | None]:
        """This worker's process id, and why it has no model if it could not load one."""
        return os.getpid(), self.error

    def picture(self, request: Request) -> Outcome:
        return make_picture(self.generate, request)


@dataclass
class _Slot:
    actor: Any
    ready: Any  # the ref of its first call, resolved once the model is loaded (or failed to)
    pid: int | None = None
    queue: deque = field(default_factory=deque)  # refs of its requests in the order sent


class RayEngine:
    def __init__(self, address: str = "local", *, workers: int | None = None, gpus_per_worker: float = 1.0,
                 in_flight: int = IN_FLIGHT, max_deaths: int = MAX_DEATHS):
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self.in_flight, self.max_deaths = in_flight, max_deaths
        self.resources: dict[str, float] = {}
        self.deaths: Counter[int] = Counter()  # by request key: workers that died making it
        self.replaced = 0  # workers started to replace dead ones
        self._slots: list[_Slot] = []
        self._started_ray = False

    # -- the cluster ---------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster (or start a local one) and settle the number of workers and what each takes."""
        try:
            import ray
        except ImportError:
            raise EditForgeError('`ray` needs Ray: pip install "editforge[ray]"') from None
        if not _answers(self.address):  # ray.init would retry a wrong address for minutes
            raise EditForgeError(f"no Ray cluster answers at {self.address}; start one there with `ray start --head`, "
                                 "or use `ray=local`")
        if not ray.is_initialized():
            try:
                if self.address == "local":
                    ray.init(include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except ConnectionError as exc:
                raise EditForgeError(f"no Ray cluster at {self.address} ({describe(exc)}); start one with "
                                     "`ray start --head`, or use `ray=local`") from None
            self._started_ray = True
        total = ray.cluster_resources()
        gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 0))
        if gpus:
            fits = int(gpus // self.gpus_per_worker)
            self.workers = self.workers or fits
            self.resources = {"num_gpus": self.gpus_per_worker, "num_cpus": 1}
            need, have = f"{self.workers} x {self.gpus_per_worker:g} GPUs", f"{gpus} GPUs"
        else:  # CPU only (tests, trying it out): a worker takes one CPU
            fits = cpus
            self.workers = self.workers or 1
            self.resources = {"num_gpus": 0, "num_cpus": 1}
            need, have = f"{self.workers} CPUs", f"{cpus} CPUs and no GPU"
        if self.workers < 1 or self.workers > fits:
            raise EditForgeError(f"the Ray cluster has {have}; `workers` {self.workers} needs {need}")

    def describe(self) -> str:
        gpus = self.resources.get("num_gpus")
        kind = f"{gpus:g} GPU{'' if gpus == 1 else 's'}" if gpus else "1 CPU"
        return f"{self.workers} Ray workers, {kind} each"

    def worker_pids(self) -> list[int]:
        """The processes of the workers that have loaded their model (a test kills one)."""
        return [slot.pid for slot in self._slots if slot.pid is not None]

    # -- the engine --------------------------------------------------------------------------------------------
    def start(self, make_generator: Callable[[], Generator], judge: bool = False) -> None:
        """Start every worker (each loads the model, and its judge when `judge`) and wait for the first: until
        then nothing is made."""
        import ray

        if not self.resources:
            self.connect()
        self._actor_class = ray.remote(_Worker).options(max_restarts=0, **self.resources)
        self._factory = ray.put(make_generator)  # sent once, loaded by every worker
        self._judge = judge
        self._slots = [self._spawn() for _ in range(self.workers)]
        first = ray.wait([slot.ready for slot in self._slots], num_returns=1)[0][0]
        self._up(next(slot for slot in self._slots if slot.ready == first))

    def pictures(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Outcome]]:
        import ray

        requests, again = iter(requests), deque()
        sent: dict[Any, tuple[_Slot, Request]] = {}  # ref -> (its worker, its request)
        more = True
        while True:
            for slot in [s for s in self._slots if s.pid is not None]:  # feed the workers that are up
                while len(slot.queue) < self.in_flight and (again or more):
                    request = again.popleft() if again else next(requests, None)
                    if request is None:
                        more = False
                        break
                    ref = slot.actor.picture.remote(request)
                    slot.queue.append(ref)
                    sent[ref] = slot, request
            if not sent and not again and not more:
                return
            starting = {slot.ready: slot for slot in self._slots if slot.pid is None}  # the rest wait for these
            # a bounded wait, so that Ctrl-C and SIGTERM (raised in Python, between waits) end the run at once
            ready = ray.wait([*sent, *starting], num_returns=1, timeout=1.0)[0]
            if not ready:
                continue
            ref = ready[0]
            if ref in starting:
                self._up(starting[ref])
                continue
            slot, request = sent.pop(ref)
            try:
                outcome = _result(ref, request)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
                sent[ref] = slot, request
                yield from self._lost(slot, exc, sent, again)
                continue
            slot.queue.remove(ref)
            yield request, outcome

    def close(self) -> None:
        import ray

        for slot in self._slots:
            ray.kill(slot.actor)  # their GPUs back to the cluster now, not when this process exits
        self._slots = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- workers coming and going ------------------------------------------------------------------------------
    def _spawn(self) -> _Slot:
        actor = self._actor_class.remote(self._factory, self._judge)
        return _Slot(actor, actor.ready.remote())

    def _up(self, slot: _Slot) -> None:
        import ray

        try:
            pid, error = ray.get(slot.ready)
        except ray.exceptions.RayError as exc:  # its process died before it was up
            raise EditForgeError(f"a Ray worker could not start: {_reason(exc)}") from None
        if error is not None:
            raise EditForgeError(f"a Ray worker could not load the model: {error}")
        slot.pid = pid

    def _lost(self, slot: _Slot, exc: Exception, sent: dict, again: deque) -> Iterator[tuple[Request, Outcome]]:
        """`slot`'s worker died: a new one takes its place, its requests go back in the queue; the one it was
        making is blamed, and failed once it has killed `max_deaths` workers."""
        self._slots.remove(slot)
        self._slots.append(self._spawn())
        self.replaced += 1
        blamed = False
        for ref in slot.queue:
            request = sent.pop(ref)[1]
            outcome = _made(ref, request)
            if outcome is not None:  # finished before the worker died (`ray.wait` told of the death first)
                yield request, outcome
                continue
            if not blamed:  # an actor works through its requests in order: the first unfinished one was in hand
                blamed = True
                self.deaths[request.key] += 1
                if self.deaths[request.key] >= self.max_deaths:
                    yield request, Outcome("failed", request.seed, failure="error",
                                           error=f"a worker died {self.max_deaths} times making this row; last: "
                                                 f"{_reason(exc)}")
                    continue
            again.append(request)
        slot.queue.clear()


def _result(ref, request: Request) -> Outcome:
    """A request's outcome; raises Ray's error when the worker died before making it."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # make_picture catches all; e.g. a result that did not pickle
        return Outcome("failed", request.seed, error=describe(exc), failure="error")


def _made(ref, request: Request) -> Outcome | None:
    """The outcome of a request a dead worker had, if it finished it before dying; else None."""
    import ray

    if not ray.wait([ref], timeout=0)[0]:
        return None
    try:
        return _result(ref, request)
    except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
        return None


def _answers(address: str, seconds: float = 5.0) -> bool:
    """Whether something listens at a HOST:PORT address ("local", "auto" and the like: Ray judges those)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
        return True
    except OSError:
        return False


def _reason(exc: Exception) -> str:
    """The first line of what Ray says about a dead actor, without its wrapper's repetition."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
