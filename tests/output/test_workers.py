"""The fork pool of fleet builds (cgsc.output.workers): chunk results in order whichever process
computed them, a worker's exception or death reaches the caller, and no worker outlives
the map."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cgsc.output.workers import (MAX_PULLED, QUEUED, WINDOW, RemoteTraceback, WorkerDied,
                                  chunk_sizes, ordered_map, pulled)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork pools need os.fork")


def _no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _flat(chunks):
    return [x for chunk in chunks for x in chunk]


def _nothing(_parent: int) -> None:
    pass


@pytest.mark.parametrize("count, jobs", [(1, 2), (5, 2), (100, 2), (333, 3), (1000, 4)])
def test_results_come_in_item_order_whoever_computed_them(count, jobs):
    parent = os.getpid()
    items = list(range(count))
    def work(chunk):
        time.sleep(0.001)   # long enough for a worker to start while this process works
        return [(i, os.getpid() == parent) for i in chunk]
    out = list(ordered_map(work, items, jobs, _nothing))
    assert [i for i, _here in _flat(out)] == items
    if count >= 100:   # both this process and a worker did some of the work
        assert {here for _i, here in _flat(out)} == {True, False}
    assert _no_children_left()


def test_the_worker_init_runs_in_workers_only():
    parent = os.getpid()
    seen = []

    def init(parent_pid: int) -> None:
        seen.append(parent_pid)   # in the worker's copy of `seen`

    def work(chunk):
        time.sleep(0.002)
        return [(x, os.getpid() != parent and seen == [parent]) for x in chunk]
    out = _flat(ordered_map(work, list(range(200)), 2, init))
    assert seen == []   # never in this process
    assert any(ok for _x, ok in out)   # the worker saw its init's effect


def _in_a_worker(action):
    """A func for ordered_map that does `action(chunk)` when run in a forked worker; here it
    returns the chunk, slowly enough that the worker gets chunks too."""
    parent = os.getpid()

    def in_the_worker(chunk):
        if os.getpid() != parent:
            action(chunk)
        time.sleep(0.01)
        return list(chunk)
    return in_the_worker


def _raise(exc):
    raise exc


def test_an_exception_in_a_worker_reaches_the_caller_with_its_type_and_text():
    work = _in_a_worker(lambda chunk: _raise(KeyError(f"bad chunk starting at {chunk[0]}")))
    with pytest.raises(KeyError, match="bad chunk starting at"):
        list(ordered_map(work, list(range(400)), 2, _nothing))
    assert _no_children_left()


def test_an_unpicklable_exception_still_says_what_went_wrong():
    class Local(Exception):   # defined in a function: pickle cannot name it
        pass
    with pytest.raises(RuntimeError, match="Local: the reason"):
        list(ordered_map(_in_a_worker(lambda chunk: _raise(Local("the reason"))),
                         list(range(400)), 2, _nothing))
    assert _no_children_left()


def test_a_killed_worker_is_reported_not_waited_for():
    work = _in_a_worker(lambda chunk: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(WorkerDied):
        list(ordered_map(work, list(range(400)), 2, _nothing))
    assert _no_children_left()


def test_a_caller_that_stops_early_leaves_no_worker_behind():
    results = ordered_map(lambda chunk: [time.sleep(0.001) or x for x in chunk],
                          list(range(2000)), 3, _nothing)
    assert next(results) == list(range(chunk_sizes(2000, 3)[0]))
    results.close()
    assert _no_children_left()


@pytest.mark.parametrize("count", [0, 1, 7, 48, 1000, 10_000])
@pytest.mark.parametrize("jobs", [2, 8])
def test_chunk_sizes_cover_every_item_largest_first(count, jobs):
    sizes = chunk_sizes(count, jobs)
    assert sum(sizes) == count and all(s >= 1 for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    if count >= 1000:
        assert sizes[0] > 1 and sizes[-1] == 1   # large first, single items at the end


def test_a_fork_that_fails_leaves_the_work_to_the_processes_there_are(monkeypatch):
    """No process to fork (ulimit -u, memory): this process does every chunk itself."""
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    items = list(range(300))
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    assert _flat(ordered_map(lambda chunk: list(chunk), items, 4, _nothing)) == items
    if before:   # no pipe left open
        assert set(os.listdir("/proc/self/fd")) == before


def test_the_first_chunk_to_fail_is_the_one_raised_whoever_fails_first():
    """As in one process: the exception of the earliest failing chunk, even when a later
    chunk fails sooner in another process."""
    def work(chunk):
        if chunk[0] == 0:
            time.sleep(0.3)
            raise ValueError("chunk 0 failed")
        if 100 in chunk:
            raise KeyError("a later chunk failed")
        return list(chunk)
    with pytest.raises(ValueError, match="chunk 0 failed"):
        list(ordered_map(work, list(range(400)), 2, _nothing))
    assert _no_children_left()


def test_a_worker_s_exception_carries_the_worker_s_traceback():
    with pytest.raises(LookupError) as exc:
        list(ordered_map(_in_a_worker(lambda chunk: _raise(LookupError("from the worker"))),
                         list(range(400)), 2, _nothing))
    assert isinstance(exc.value.__cause__, RemoteTraceback)
    assert "in_the_worker" in str(exc.value.__cause__)


def test_results_that_come_early_never_pile_up(tmp_path):
    """A slow first chunk: the other chunks computed meanwhile, whose results must wait
    for it, stay within the window, however long the fleet."""
    log = tmp_path / "log"

    def work(chunk):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"start {chunk[0]}\n".encode())
        if chunk[0] == 0:
            time.sleep(1.0)
            os.write(fd, b"end 0\n")
        os.close(fd)
        return list(chunk)
    items = list(range(20_000))
    assert _flat(ordered_map(work, items, 2, _nothing)) == items
    lines = log.read_text().splitlines()
    started_meanwhile = lines.index("end 0") - 1
    assert 1 <= started_meanwhile <= WINDOW * 2 + QUEUED, started_meanwhile


def test_a_worker_gone_before_it_takes_a_chunk_is_reported_as_dead():
    """Handing a chunk to a worker that has just died: the write finds no reader (EPIPE),
    which is WorkerDied, not a reader that left (`cgsc rules | head`)."""
    from cgsc.output.workers import _hand, _Worker
    read_end, write_end = os.pipe()
    os.close(read_end)
    worker = _Worker(pid=0, tasks=write_end, results=-1)
    try:
        with pytest.raises(WorkerDied):
            _hand(worker, 7)
        assert worker.held == []
    finally:
        os.close(write_end)


# -- pulled(): one queue that every process takes chunks from ------------------------------

@pytest.mark.parametrize("count, jobs", [(1, 2), (7, 2), (300, 2), (300, 3)])
def test_pulled_gives_every_chunk_s_result_in_order(count, jobs):
    parent = os.getpid()
    chunks = [[i] for i in range(count)]
    ran = []

    def work(chunk):
        time.sleep(0.001)
        return chunk[0], os.getpid() == parent
    out = pulled(work, chunks, jobs, _nothing, lambda: ran.append(os.getpid()))
    assert [i for i, _here in out] == list(range(count)) and ran == [parent]
    if count >= 300:
        assert {here for _i, here in out} == {True, False}
    assert _no_children_left()


def test_pulled_workers_work_while_this_process_is_busy():
    """The workers hold the whole queue: a long `meanwhile` here never stops them (their
    results wait in their memory, not in a pipe this process does not read)."""
    parent = os.getpid()
    chunks = [[i] * 4096 for i in range(64)]   # results of 32 KB each: a pipe holds two

    def work(chunk):
        return os.getpid() == parent, time.monotonic(), list(chunk)
    start = []
    out = pulled(work, chunks, 2, _nothing,
                 lambda: start.append(time.monotonic()) or time.sleep(0.5))
    by_worker = [when for here, when, _chunk in out if not here]
    assert len(by_worker) == len(chunks)   # it took them all while this process slept
    assert max(by_worker) < start[0] + 0.5
    assert [chunk[0] for _here, _when, chunk in out] == list(range(64))
    assert _no_children_left()


def test_pulled_raises_the_first_failed_chunk_s_exception():
    work = _in_a_worker(lambda chunk: _raise(KeyError(f"bad chunk {chunk[0]}")))
    with pytest.raises(KeyError, match="bad chunk"):
        pulled(work, [[i] for i in range(200)], 2, _nothing, lambda: None)
    assert _no_children_left()


def test_pulled_reports_a_killed_worker():
    work = _in_a_worker(lambda chunk: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(WorkerDied):
        pulled(work, [[i] for i in range(200)], 2, _nothing, lambda: None)
    assert _no_children_left()


def test_pulled_takes_no_more_chunks_than_the_smallest_pipe_holds():
    with pytest.raises(ValueError):
        pulled(list, [[0]] * (MAX_PULLED + 1), 2, _nothing, lambda: None)
    assert MAX_PULLED * 4 <= 4096


@pytest.mark.parametrize("exhausted", [
    OSError(24, "Too many open files"), OSError(23, "Too many open files in system")])
def test_pulled_without_a_pipe_for_its_queue_does_every_chunk_here(monkeypatch, exhausted):
    """No descriptor left for the queue (ulimit -n, the system's file table): as when no
    worker can be forked, this process does the work (`meanwhile` first), never an error
    that stops a check one process can do."""
    def no_pipe():
        raise exhausted
    monkeypatch.setattr(os, "pipe", no_pipe)
    ran = []
    out = pulled(lambda chunk: [x * 2 for x in chunk], [[i] for i in range(10)], 2, _nothing,
                 lambda: ran.append(os.getpid()))
    assert out == [[i * 2] for i in range(10)] and ran == [os.getpid()]
    assert _no_children_left()


def test_pulled_forks_no_more_workers_than_there_are_chunks_beside_this_process(monkeypatch):
    """-j 200 on a fleet whose records make 3 chunks: 2 workers, not 199 forks of a large
    process that find the queue empty (ordered_map's bound)."""
    forks = []
    real_fork = os.fork

    def counted():
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", counted)
    out = pulled(lambda chunk: list(chunk), [[0], [1], [2]], 200, _nothing, lambda: None)
    assert out == [[0], [1], [2]] and len(forks) == 2
    assert _no_children_left()
