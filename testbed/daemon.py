"""Run a twistd plugin of this repository (e.g. ``dmuc-master``) as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from testbed import logtails
from testbed.prosody import Pausable, TestbedError, _live, kill_process, stop_process

# the directory holding dmuc/ and twisted/plugins/ (so twistd finds the in-tree plugin)
REPO_ROOT = Path(__file__).resolve().parents[1]
TWISTD = "from twisted.scripts.twistd import run; run()"


class TwistdDaemon(Pausable):
    """``twistd -n <name> --config <config_path>``, logging to ``<workdir>/<name>.log``.

    ``start()`` returns once a log line contains ``wait_for``; ``stop()`` SIGTERMs it by PID.
    stdout/stderr (usage errors, early tracebacks) go to ``<workdir>/<name>.stdout``.
    """

    def __init__(
        self,
        name: str = "dmuc-master",
        config_path: Path | str | None = None,
        workdir: Path | str = ".",
        env_extra: Mapping[str, str] | None = None,
        *,
        args: Sequence[str] | None = None,
        wait_for: str = "component connected",
    ) -> None:
        self.name = name
        self.wait_for = wait_for  # default for start() and the context manager
        self.config_path = Path(config_path) if config_path is not None else None
        self.workdir = Path(workdir).resolve()
        self.env_extra = dict(env_extra or {})
        # plugin arguments; default: --config <config_path>
        if args is None:
            args = ["--config", str(self.config_path)] if self.config_path else []
        self.args = list(args)
        self.log_path = self.workdir / f"{name}.log"
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self.paused = False  # SIGSTOPped by pause()

    @property
    def label(self) -> str:
        return self.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        # twistd proper (``python -m twisted`` is the newer ``twist`` runner, other options)
        return [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=",
            f"--logfile={self.log_path}", self.name, *self.args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(path)
        env.update(self.env_extra)
        return env

    def start(self, wait_for: str | None = None, timeout: float = 15.0, *,
              keep_log: bool = False) -> TwistdDaemon:
        """Launch and wait for a log line containing ``wait_for`` (default ``self.wait_for``);
        raise with the log tail if the process exits first or ``timeout`` s pass.
        ``keep_log`` appends to the log of the previous run (a restart) instead of starting a
        fresh one, and waits for one more ``wait_for`` line than it already holds."""
        wait_for = self.wait_for if wait_for is None else wait_for
        if self.running():
            raise TestbedError(f"{self.name} already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        logtails.watch(self.name, self.log_path)
        count = 1
        if keep_log:
            count += sum(wait_for in line for line in self.log_text().splitlines())
        else:
            for old in self._log_files():  # a fresh log per run
                old.unlink()
        if self._stdout is not None:
            self._stdout.close()
        self._stdout = open(self.stdout_path, "ab" if keep_log else "wb")
        self.paused = False
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workdir, env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C at the terminal reaches only our launcher, which
            # then stops the daemon once, by PID.
            start_new_session=True,
        )
        _live.add(self)
        try:
            self.wait_for_log(wait_for, timeout, count)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_log(self, text: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until ``count`` log lines contain ``text``; return the last of them.
        (A log file offers no event to await: it is re-read with a short backoff.)"""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            lines = [line for line in self.log_text().splitlines() if text in line]
            if len(lines) >= count:
                return lines[count - 1]
            if self.proc.poll() is not None:
                self._fail(f"{self.name} exited with code {self.proc.returncode} "
                           f"before logging {text!r}")
            if time.monotonic() > deadline:
                self._fail(f"{self.name} did not log {text!r} {count} times within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _fail(self, why: str) -> None:
        log = "\n".join(self.log_text().splitlines()[-40:])
        try:
            out = self.stdout_path.read_text(errors="replace")[-4000:]
        except OSError:
            out = ""
        raise TestbedError(f"{why}\n--- {self.log_path} (tail) ---\n{log}"
                           f"\n--- {self.stdout_path} ---\n{out}")

    def _log_files(self) -> list[Path]:
        """Rotated logs oldest first (twistd rotates at 1 MB: name.log.2, name.log.1), then
        the current one."""
        rotated = []
        for p in self.workdir.glob(f"{self.name}.log.*"):
            suffix = p.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                rotated.append((int(suffix), p))
        files = [p for _, p in sorted(rotated, reverse=True)]
        return files + ([self.log_path] if self.log_path.exists() else [])

    def log_text(self) -> str:
        """Everything this run logged so far (rotated parts included)."""
        parts = []
        for p in self._log_files():
            try:
                parts.append(p.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(parts)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self, wait_for: str | None = None, timeout: float = 15.0) -> TwistdDaemon:
        """Stop (SIGTERM by PID) if running, then start again on the same config, state and
        log (see ``start(keep_log=True)``)."""
        self.stop()
        return self.start(wait_for, timeout, keep_log=True)

    def kill(self) -> int | None:
        """SIGKILL by PID (kill -9: no shutdown, nothing flushed); returns the exit code."""
        code = kill_process(self.proc) if self.proc is not None else None
        self.paused = False
        self.stop()  # closes its stdout file; the process is gone already
        return code

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``timeout`` s; returns the exit code; idempotent.
        A paused process is resumed first (a stopped process does not act on SIGTERM)."""
        if self.paused:
            self.resume()
        code = stop_process(self.proc, timeout) if self.proc is not None else None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        _live.discard(self)
        return code

    def __enter__(self) -> TwistdDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TwistdDaemon {self.name} pid={self.pid} {self.workdir}>"
