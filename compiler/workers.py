"""An ordered map over chunks of work, run in this process and in forked workers.

Why not concurrent.futures: importing it and multiprocessing costs 15-20 ms of a fleet
build that takes half a second, its pool leaves this process idle while it could work,
and every result crosses a manager thread. Here this process is one of the workers, so
`jobs` processes use `jobs` cores; the others are forked once and inherit everything
loaded so far.

Scheduling: every chunk's index is written into one pipe before the first fork, and each
process reads the next 4-byte index from it (a read of 4 bytes is atomic, every write was
a multiple of 4 bytes and at most PIPE_BUF) until it is empty. A worker sends its results
as framed pickles through a pipe of its own; this process yields every chunk's results in
chunk order, so the caller sees exactly what a one-process run gives.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, Dict, Iterator, List, Sequence

_INDEX = struct.Struct("<I")
_FRAME = struct.Struct("<IBI")       # chunk index, kind, payload length
_RESULTS, _FAILED = 0, 1
MAX_CHUNKS = 1024                     # their indexes fill one PIPE_BUF (4 KiB) write


class WorkerDied(Exception):
    """A worker was killed (a signal, the OOM killer) or exited without its results."""


def chunk_sizes(count: int, jobs: int, largest: int = 32) -> List[int]:
    """Guided sizes: large chunks first, ones of a single item at the end, so that no
    process is left with a long chunk while the others are idle; never more than
    MAX_CHUNKS chunks."""
    smallest = max(1, -(-count // MAX_CHUNKS))
    sizes, left = [], count
    while left > 0:
        size = min(left, max(smallest, min(largest, left // (jobs * 4))))
        sizes.append(size)
        left -= size
    return sizes


def ordered_map(func: Callable[[Sequence], object], items: Sequence, jobs: int,
                child_init: Callable[[int], None]) -> Iterator:
    """func(chunk) of each chunk of `items`, in order, chunks computed by this process and
    `jobs - 1` forked workers. `child_init(parent_pid)` runs first in each worker.
    Raises what func raised (in whichever process), or WorkerDied."""
    import pickle
    import select
    chunks, start = [], 0
    for size in chunk_sizes(len(items), jobs):
        chunks.append(items[start:start + size])
        start += size
    tasks_r, tasks_w = os.pipe()
    os.write(tasks_w, b"".join(_INDEX.pack(i) for i in range(len(chunks))))
    os.close(tasks_w)   # every index is in the pipe: an empty read means no work is left
    workers: Dict[int, _Worker] = {}
    try:
        for _ in range(min(jobs, len(chunks)) - 1):
            try:
                worker = _fork(func, chunks, tasks_r, child_init, [w.fd for w in workers.values()])
            except OSError:   # no more processes (ulimit -u, memory): fewer workers do it all
                break
            workers[worker.fd] = worker
        done: Dict[int, object] = {}
        poll = select.poll()
        for fd in workers:
            poll.register(fd, select.POLLIN)
        following = 0
        while following < len(chunks):
            if following in done:
                yield done.pop(following)
                following += 1
                continue
            for fd, _event in poll.poll(0):
                _receive(workers, fd, done, poll, pickle)
            if following in done:
                continue
            index = _take(tasks_r)
            if index is not None:   # work on a chunk here rather than wait
                done[index] = func(chunks[index])
                continue
            if not workers:
                raise WorkerDied(f"chunk {following} was taken but never finished")
            for fd, _event in poll.poll():
                _receive(workers, fd, done, poll, pickle)
        while workers:
            _reap(workers.popitem()[1])
    finally:
        os.close(tasks_r)
        for worker in workers.values():   # stopped early: an error, ^C, or the caller left
            try:
                os.kill(worker.pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(worker.pid, 0)
            os.close(worker.fd)


class _Worker:
    def __init__(self, pid: int, fd: int):
        self.pid, self.fd, self.buffer = pid, fd, bytearray()


def _take(tasks_r: int):
    data = os.read(tasks_r, _INDEX.size)
    return _INDEX.unpack(data)[0] if data else None


def _fork(func, chunks, tasks_r: int, child_init, inherited: List[int]) -> _Worker:
    results_r, results_w = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(results_r)
        os.close(results_w)
        raise
    if pid == 0:   # the worker: never returns, never runs this process's exit handlers
        status = 1
        try:
            os.close(results_r)
            for fd in inherited:   # other workers' result pipes
                os.close(fd)
            child_init(parent)
            status = _work(func, chunks, tasks_r, results_w)
        finally:
            os._exit(status)
    os.close(results_w)
    os.set_blocking(results_r, False)
    return _Worker(pid, results_r)


def _work(func, chunks, tasks_r: int, results_w: int) -> int:
    import pickle
    while True:
        index = _take(tasks_r)
        if index is None:
            return 0
        try:
            kind, payload = _RESULTS, pickle.dumps(func(chunks[index]), pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # sent to this process's parent, which raises it
            kind, payload = _FAILED, _pickled_exception(exc, pickle)
        _write_all(results_w, _FRAME.pack(index, kind, len(payload)) + payload)
        if kind == _FAILED:
            return 1


def _pickled_exception(exc: BaseException, pickle) -> bytes:
    try:
        payload = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)
        return payload
    except Exception:   # not picklable: its type and text still say what went wrong
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive(workers: Dict[int, _Worker], fd: int, done: dict, poll, pickle) -> None:
    """Read what a worker has sent; keep each complete chunk's results in `done`. A
    worker's failure is raised here; so is its death, once what it sent is read."""
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
        if kind == _FAILED:
            raise value
        done[index] = value
    if ended:
        poll.unregister(fd)
        _reap(workers.pop(fd))


def _reap(worker: _Worker) -> None:
    """Wait for a worker that has closed its pipe; WorkerDied unless it exited cleanly."""
    _pid, status = os.waitpid(worker.pid, 0)
    os.close(worker.fd)
    worker.fd = -1
    if os.waitstatus_to_exitcode(status) != 0:
        raise WorkerDied(f"worker {worker.pid} ended with status "
                         f"{os.waitstatus_to_exitcode(status)}")
