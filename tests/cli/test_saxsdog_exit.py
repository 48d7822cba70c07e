"""The saxsdog command ends without the interpreter's teardown, but as a normal exit would."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_exit_without_teardown_waits_runs_exit_handlers_and_flushes(tmp_path):
    """Another non-daemon thread is waited for (a run file's close retried after a full
    disk), the exit handlers run, buffered output arrives, and the code is the exit status."""
    done = tmp_path / "thread-done"
    code = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from saxsdog.cli.saxsdog import exit_without_teardown
        def late():
            time.sleep(0.3)
            open({str(done)!r}, "w").write("closed")
        threading.Thread(target=late).start()
        atexit.register(lambda: sys.stdout.write("exit handler ran\\n"))
        sys.stdout.write("buffered, no newline")
        exit_without_teardown(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newlineexit handler ran\n"
    assert done.read_text() == "closed"


def test_the_console_script_exits_with_the_command_s_status(tmp_path):
    argv = ["saxsdog", "-c", str(tmp_path / "missing.json"), str(tmp_path)]
    code = f"import sys; sys.argv = {argv!r}; from saxsdog.cli.entry import saxsdog; saxsdog()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "calibration file not found" in proc.stderr


def test_an_idle_thread_pool_does_not_keep_the_command_from_ending():
    """A thread pool left open (its idle threads are not daemons) is told to finish, as at a
    normal exit, instead of being waited for forever."""
    code = textwrap.dedent("""
        from concurrent.futures import ThreadPoolExecutor
        from saxsdog.cli.saxsdog import exit_without_teardown
        pool = ThreadPoolExecutor(2)
        print(pool.submit(lambda: 41 + 1).result())
        exit_without_teardown(0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n"
