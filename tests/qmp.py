"""Ask a QEMU on `-qmp stdio` a list of commands, one at a time.

Each command is sent only after the previous one's reply has been read, and `quit` only
after the last. Sending everything at once races: QEMU queues a reply larger than the pipe
(query-qmp-schema is ~230 KiB) and `quit` exits with the rest of it unwritten, which a
loaded machine turns into a reply cut at 64 KiB.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import List


@dataclass
class Answer:
    returncode: int
    replies: List[dict]   # one per command answered, in order ("return" or "error")
    stderr: str
    said: str             # everything QEMU wrote on stdout (greeting and events too)


def ask(argv, commands, timeout: float = 120, **popen) -> Answer:
    """Run argv (which has `-qmp stdio`), negotiate capabilities, send each command and
    read its reply, then quit. If QEMU exits early, the replies are those it gave."""
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, **popen)
        lines = _Lines(proc.stdout.fileno(), deadline)
        replies = []
        try:
            for command in [{"execute": "qmp_capabilities"}] + list(commands):
                if not _send(proc, command):
                    break
                reply = lines.reply()
                if reply is None:
                    break
                replies.append(reply)
            if _send(proc, {"execute": "quit"}):
                proc.stdin.close()
            lines.rest()
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Answer(proc.returncode, replies[1:], stderr, lines.said.decode(errors="replace"))


def _send(proc, command) -> bool:
    try:
        proc.stdin.write(json.dumps(command).encode() + b"\n")
        proc.stdin.flush()
        return True
    except (BrokenPipeError, ValueError):
        return False   # QEMU has exited


class _Lines:
    """QEMU's stdout read line by line, within the deadline."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline = fd, deadline
        self.said, self.pending = b"", b""

    def _more(self) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            raise TimeoutError(f"QEMU said nothing more in time; so far: {self.said[-2000:]!r}")
        chunk = os.read(self.fd, 1 << 16)
        self.said += chunk
        self.pending += chunk
        return bool(chunk)

    def reply(self):
        """The next reply to a command (events and the greeting are passed over); None at
        end of output."""
        while True:
            while b"\n" not in self.pending:
                if not self._more():
                    return None
            line, self.pending = self.pending.split(b"\n", 1)
            if not line.startswith(b"{"):
                continue   # not QMP (a warning some QEMU builds print on stdout)
            message = json.loads(line)
            if "return" in message or "error" in message:
                return message

    def rest(self):
        while self._more():
            pass
