"""Inside a private mount namespace (see launch_helpers.run_batch): a tmpfs /run (and
/sys/module when asked), then the guest's starts. Standard library only: it starts once
per batch."""

import json
import os
import signal as signals
import shutil
import subprocess
import sys
import time


def _driver(job_path: str) -> int:
    """Inside the namespace: a tmpfs /run (and /sys/module when asked), then the starts."""
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    mounts = [["mount", "-t", "tmpfs", "-o", "mode=0755", "cgsc-test-run", "/run"]]
    if job["module_params"]:
        mounts.append(["mount", "-t", "tmpfs", "-o", "mode=0755", "cgsc-test-modules",
                       "/sys/module"])
    for argv in mounts:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(f"{' '.join(argv)}: {done.stderr}")
            return 97
    for module, params in job["module_params"].items():
        os.makedirs(f"/sys/module/{module}/parameters")
        for key, value in params.items():
            with open(f"/sys/module/{module}/parameters/{key}", "w", encoding="ascii") as fh:
                fh.write(value + "\n")
    os.makedirs("/run/cgsc", 0o755)
    runtime = f"/run/cgsc/{job['name']}"
    results = []
    for _ in range(job["runs"]):
        shutil.rmtree(runtime, ignore_errors=True)   # RuntimeDirectory=: new at every start
        os.mkdir(runtime)
        os.chmod(runtime, job["dir_mode"])
        for name in job["plant"]:
            os.makedirs(os.path.dirname(os.path.join(runtime, name)), exist_ok=True)
            with open(os.path.join(runtime, name), "wb") as fh:
                fh.write(b"left by a killed launch")
        rc, stderr = 0, ""
        for i, argv in enumerate(job["commands"]):
            last = i == len(job["commands"]) - 1
            rc, stderr = _start(argv, job, job["signal"] if last else None)
            if rc:
                break
        left = sorted(os.path.relpath(os.path.join(d, f), runtime)
                      for d, dirs, files in os.walk(runtime) for f in dirs + files)
        results.append({"rc": rc, "stderr": stderr, "left": left})
    with open(job["results"], "w", encoding="utf-8") as fh:
        json.dump(results, fh)
    return 0


# ProtectSystem=strict as systemd sets it up for each command of the unit: the whole tree
# read-only but /dev, /proc, /sys, the runtime directory (RuntimeDirectory=) and the
# writable paths (ReadWritePaths=: here the stand-in's log).
STRICT = ('mount --bind "$1" "$1" && mount --bind "$2" "$2" && '
          'mount -o remount,bind,ro / && mount -o remount,bind,ro /run && shift 2 && exec "$@"')


def _as_started(umask: int) -> None:
    """The child's state as systemd (or an interactive shell) starts a command: its umask,
    and default signal dispositions. The test run itself may have inherited SIGINT ignored
    (a background job of a non-interactive shell), and a shell cannot trap a signal that was
    ignored when it started."""
    os.umask(umask)
    for sig in (signals.SIGINT, signals.SIGQUIT, signals.SIGTERM, signals.SIGHUP):
        signals.signal(sig, signals.SIG_DFL)


def _start(argv, job, signal):
    """One command as systemd runs it: its own session, a clean environment, cwd /, and
    with `strict`, ProtectSystem=strict."""
    if job["strict"]:
        argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", STRICT,
                "sh", f"/run/cgsc/{job['name']}", job["strict"]] + argv
    proc = subprocess.Popen(argv, env=job["env"], cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: _as_started(job["umask"]))
    if signal:
        deadline = time.monotonic() + 60
        while not os.path.exists(signal["marker"]) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal["signal"])
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _out, err = proc.communicate()
        return -999, "hung: " + err
    return proc.returncode, err


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1]))
