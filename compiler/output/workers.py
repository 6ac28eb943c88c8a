"""An ordered map over chunks of work, run in this process and in forked workers.

Why not concurrent.futures: importing it and multiprocessing costs 15-20 ms of a fleet
build that takes half a second, its pool leaves this process idle while it could work,
and every result crosses a manager thread. Here this process is one of the workers, so
`jobs` processes use `jobs` cores; the others are forked once and inherit everything
loaded so far.

This process hands out the chunks: to each worker, through a pipe of its own, at most
two at a time, and to itself; never more than a window of chunks beyond the first one
not yet yielded, so results that arrive early never pile up. A worker sends each
chunk's results, or the exception it raised with its traceback, as a framed pickle
through another pipe. Results are yielded, and exceptions raised, in chunk order: the
caller sees exactly what a one-process run gives.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, Dict, Iterator, List, Sequence

_INDEX = struct.Struct("<I")
_FRAME = struct.Struct("<IBI")       # chunk index, kind, payload length
_RESULTS, _FAILED = 0, 1
QUEUED = 2                            # chunks a worker holds at most (one running, one next)
MAX_PULLED = 1024                     # pulled(): 4 KiB of indexes, a pipe's smallest size
WINDOW = 4                            # chunks in flight per process, beyond the one awaited


class WorkerDied(Exception):
    """A worker was killed (a signal, the OOM killer) before it returned its chunks."""


class RemoteTraceback(Exception):
    """Where a worker's exception came from: its traceback, as text (the __cause__ of the
    exception raised here, so that --debug shows the worker's frames)."""

    def __str__(self) -> str:
        return self.args[0]


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def cores() -> int:
    """The processors this process may run on (1 where it cannot fork)."""
    if not hasattr(os, "fork"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def worker_init(parent: int) -> None:
    """A worker's first step: the parent handles ^C, SIGTERM and SIGHUP and stops its
    workers; a worker dies with its parent."""
    import signal
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with(parent)


def _die_with(parent: int) -> None:
    """A worker must not outlive a killed build: it would hold the output directory's
    lock (an inherited descriptor) and keep writing into a staging directory."""
    import signal
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def chunk_sizes(count: int, jobs: int, largest: int = 32) -> List[int]:
    """Guided sizes: large chunks first, ones of a single item at the end, so that no
    process is left with a long chunk while the others are idle."""
    sizes, left = [], count
    while left > 0:
        size = min(left, max(1, min(largest, left // (jobs * 4))))
        sizes.append(size)
        left -= size
    return sizes


class _Worker:
    def __init__(self, pid: int, tasks: int, results: int):
        self.pid, self.tasks, self.results = pid, tasks, results
        self.held: List[int] = []      # chunks handed to it and not yet returned
        self.buffer = bytearray()


def ordered_map(func: Callable[[Sequence], object], items: Sequence, jobs: int,
                child_init: Callable[[int], None]) -> Iterator:
    """func(chunk) of each chunk of `items`, in order, chunks computed by this process and
    `jobs - 1` forked workers. `child_init(parent_pid)` runs first in each worker.
    Raises what func raised for the first chunk that failed, or WorkerDied."""
    import select
    chunks, start = [], 0
    for size in chunk_sizes(len(items), max(1, jobs)):
        chunks.append(items[start:start + size])
        start += size
    workers: Dict[int, _Worker] = {}   # by result descriptor
    poll = select.poll()
    try:
        _start(workers, poll, min(jobs, len(chunks)) - 1, func, chunks, child_init)
        done: Dict[int, object] = {}
        following = issued = 0
        window = WINDOW * (len(workers) + 1)
        while following < len(chunks):
            if following in done:
                result = done.pop(following)
                if isinstance(result, _Failed):
                    raise result.exc
                yield result
                following += 1
                continue
            for fd, _event in poll.poll(0):
                _receive(workers, fd, done, poll)
            for worker in workers.values():   # keep every worker supplied
                while (len(worker.held) < QUEUED and issued < len(chunks)
                       and issued - following < window):
                    _hand(worker, issued)
                    issued += 1
            if issued == len(chunks):
                _no_more_tasks(workers)
            if following in done:
                continue
            if issued < len(chunks) and issued - following < window:
                index, issued = issued, issued + 1   # work here rather than wait
                try:
                    done[index] = func(chunks[index])
                except Exception as exc:   # raised in its turn, as a worker's would be
                    done[index] = _Failed(exc)
                continue
            if not any(w.held for w in workers.values()):
                raise WorkerDied(f"chunk {following} was handed out but never returned")
            for fd, _event in poll.poll():
                _receive(workers, fd, done, poll)
        _no_more_tasks(workers)
        while workers:
            _reap(workers, next(iter(workers)), poll)
    finally:
        _stop(workers)


def blocks(items: Sequence, least: int) -> List[Sequence]:
    """`items` cut for pulled(): blocks of at least `least` items (each is a read of the
    queue and a result sent back), and at most MAX_PULLED of them."""
    size = max(least, -(-len(items) // MAX_PULLED))
    return [items[k:k + size] for k in range(0, len(items), size)]


def pulled(func: Callable[[Sequence], object], chunks: Sequence[Sequence], jobs: int,
           child_init: Callable[[int], None], meanwhile: Callable[[], None]) -> List:
    """func(chunk) of every chunk, in order, computed by this process and `jobs - 1` forked
    workers that each take the next chunk from one queue as they finish the last: a pipe
    filled with every chunk's index before they start, so no worker waits on this
    process, which first runs `meanwhile()` (other work) and then takes chunks too.
    At most MAX_PULLED chunks (their indexes fit the smallest pipe a system makes).
    Raises what func raised for the first chunk that failed, or WorkerDied."""
    import select
    if len(chunks) > MAX_PULLED:
        raise ValueError(f"{len(chunks)} chunks: at most {MAX_PULLED}")
    workers: Dict[int, _Worker] = {}   # by result descriptor
    poll = select.poll()
    done: Dict[int, object] = {}
    try:
        queue, filler = os.pipe()
    except OSError:   # no descriptor for the queue (ulimit -n): as when no worker forks
        meanwhile()
        return [func(chunk) for chunk in chunks]
    try:
        try:
            os.write(filler, b"".join(_INDEX.pack(i) for i in range(len(chunks))))
        finally:
            os.close(filler)   # the end of the queue: each reader then reads end of file
        _start(workers, poll, min(jobs, len(chunks)) - 1, func, chunks, child_init, queue)
        meanwhile()
        while True:
            data = _read_exactly(queue, _INDEX.size)
            if not data:
                break
            index = _INDEX.unpack(data)[0]
            try:
                done[index] = func(chunks[index])
            except Exception as exc:
                done[index] = _Failed(exc)
            for fd, _event in poll.poll(0):   # a worker done with its share: it waits to send it
                _receive(workers, fd, done, poll)
        while workers:
            for fd, _event in poll.poll():
                _receive(workers, fd, done, poll)
    finally:
        os.close(queue)
        _stop(workers)
    out = []
    for index in range(len(chunks)):
        if index not in done:
            raise WorkerDied(f"chunk {index} was taken by a worker that never returned it")
        if isinstance(done[index], _Failed):
            raise done[index].exc
        out.append(done[index])
    return out


def _start(workers: Dict[int, _Worker], poll, count: int, func, chunks, child_init,
           queue: int = -1) -> None:
    """Fork `count` workers (fewer when the system has no more processes, ulimit -u or
    memory: those there are do it all). ^C and SIGTERM wait until each is registered, so
    none is left unknown to _stop, and none runs this process's code on a signal.
    `queue`: the read end of a task pipe they share (pulled()), else each has its own."""
    import select
    held = _hold_signals()
    try:
        for _ in range(count):
            try:
                worker = _fork(func, chunks, child_init, workers, held, queue)
            except OSError:
                break
            workers[worker.results] = worker
            poll.register(worker.results, select.POLLIN)
    finally:
        _release_signals(held)


def _stop(workers: Dict[int, _Worker]) -> None:
    """Kill and reap every worker still registered (stopped early: an error, ^C, or the
    caller left), each to the end whatever the others do."""
    held = _hold_signals()
    try:
        for worker in workers.values():
            try:
                os.kill(worker.pid, 9)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(worker.pid, 0)
            except ChildProcessError:
                pass
            _close(worker)
        workers.clear()
    finally:
        _release_signals(held)


def _hold_signals():
    import signal
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _release_signals(previous) -> None:
    import signal
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _hand(worker: _Worker, index: int) -> None:
    try:
        os.write(worker.tasks, _INDEX.pack(index))
    except BrokenPipeError:   # it has died since the last look at its results
        raise WorkerDied(f"worker {worker.pid} ended before it took chunk {index}") from None
    worker.held.append(index)


def _close(worker: _Worker, which=("tasks", "results")) -> None:
    for name in which:
        fd = getattr(worker, name)
        setattr(worker, name, -1)   # first: an interrupted close is never tried twice
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _no_more_tasks(workers: Dict[int, _Worker]) -> None:
    """Close the task pipes: each worker finishes what it holds, then reads end of file."""
    for worker in workers.values():
        _close(worker, ("tasks",))


def _fork(func, chunks, child_init, workers: Dict[int, _Worker], held,
          queue: int = -1) -> _Worker:
    tasks_r, tasks_w = (queue, -1) if queue >= 0 else os.pipe()
    try:
        results_r, results_w = os.pipe()
    except OSError:
        if queue < 0:
            os.close(tasks_r)
            os.close(tasks_w)
        raise
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (results_r, results_w) + ((tasks_r, tasks_w) if queue < 0 else ()):
            os.close(fd)
        raise
    if pid == 0:   # the worker: never returns, never runs this process's exit handlers
        status = 1
        try:
            for fd in [tasks_w, results_r] + [x for w in workers.values()
                                              for x in (w.tasks, w.results) if x >= 0]:
                if fd >= 0:
                    os.close(fd)   # this process's ends, and the other workers' pipes
            child_init(parent)   # with ^C still held: it ignores ^C from now on
            _release_signals(held)
            status = _work(func, chunks, tasks_r, results_w, batch=queue >= 0)
        finally:
            os._exit(status)
    if queue < 0:
        os.close(tasks_r)
    os.close(results_w)
    os.set_blocking(results_r, False)
    return _Worker(pid, tasks_w, results_r)


def _work(func, chunks, tasks_r: int, results_w: int, batch: bool = False) -> int:
    """A worker's loop: the chunks it is handed, to the end of its task pipe. `batch`:
    their results are sent together at the end (pulled(): the parent may be busy with
    other work meanwhile, and a full result pipe would stop this worker)."""
    import pickle
    frames = []
    while True:
        data = _read_exactly(tasks_r, _INDEX.size)
        if not data:
            _write_all(results_w, b"".join(frames))
            return 0
        index = _INDEX.unpack(data)[0]
        try:
            kind, payload = _RESULTS, pickle.dumps(func(chunks[index]), pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # raised in this process's parent, in its turn
            kind, payload = _FAILED, _pickled_failure(exc, pickle)
        frames.append(_FRAME.pack(index, kind, len(payload)) + payload)
        if not batch:
            _write_all(results_w, frames.pop())


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            return b""
        data += more
    return data


def _pickled_failure(exc: BaseException, pickle) -> bytes:
    import traceback
    where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload = pickle.dumps((exc, where), pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)
        return payload
    except Exception:   # not picklable: its type and text still say what went wrong
        return pickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), where))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive(workers: Dict[int, _Worker], fd: int, done: dict, poll) -> None:
    """Read what a worker has sent; keep each complete chunk's results (or failure) in
    `done`. A worker that ended before returning every chunk it held: WorkerDied."""
    import pickle
    worker = workers[fd]
    ended = False
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not data:   # the worker has exited (or died)
            ended = True
            break
        worker.buffer += data
    buffer = worker.buffer
    while len(buffer) >= _FRAME.size:
        index, kind, length = _FRAME.unpack_from(buffer)
        if len(buffer) < _FRAME.size + length:
            break
        value = pickle.loads(bytes(buffer[_FRAME.size:_FRAME.size + length]))
        del buffer[:_FRAME.size + length]
        if index in worker.held:   # (not so in pulled(): a worker takes its own chunks)
            worker.held.remove(index)
        if kind == _FAILED:
            exc, where = value
            exc.__cause__ = RemoteTraceback(where)
            value = _Failed(exc)
        done[index] = value
    if ended:
        _reap(workers, fd, poll)


def _reap(workers: Dict[int, _Worker], fd: int, poll) -> None:
    """Wait for a worker that has closed its result pipe (it stays registered until then,
    for _stop); WorkerDied unless it exited cleanly with nothing left to return."""
    worker = workers[fd]
    _pid, status = os.waitpid(worker.pid, 0)
    poll.unregister(fd)
    del workers[fd]
    _close(worker)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or worker.held:
        raise WorkerDied(f"worker {worker.pid} ended with status {code}, "
                         f"{len(worker.held)} chunk(s) not returned")

