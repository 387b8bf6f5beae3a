"""The output lock with real processes: a live holder refuses a second writer naming its pid, a
killed holder's lock is taken over with a message, a released lock is free and empty."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from diffseg3d.experiments.output_lock import (
    OutputLockedError,
    ablate_lock_path,
    output_lock,
    parse_holder,
)

#: A process that takes the lock, says so, and holds it until its stdin closes.
HOLDER = """
import sys
from diffseg3d.experiments.output_lock import output_lock
with output_lock(sys.argv[1], "the holder's place"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """A live process holding `<tmp>/locks/x.lock` (killed at the end if still alive)."""
    path = tmp_path / "locks" / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"  # blocks until it holds the lock
    yield proc, path
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def test_a_live_holder_refuses_a_second_writer_naming_its_pid(holder):
    proc, path = holder
    with pytest.raises(OutputLockedError) as info, output_lock(path, "grid g in runs"):
        pytest.fail("the lock was granted twice")
    message = str(info.value)
    assert message.startswith("grid g in runs is already being written by ")
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message
    assert "the holder's place" not in message and "-c" in message  # the holder's command line
    assert str(path) in message
    # The refusal changed nothing: the file still names the holder.
    assert parse_holder(path.read_text()).pid == proc.pid


def test_a_killed_holder_is_taken_over_with_a_message(holder):
    proc, path = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert parse_holder(path.read_text()).pid == proc.pid  # the dead holder's record stays
    said = []
    with output_lock(path, "grid g in runs", echo=said.append) as me:
        assert me.pid == os.getpid()
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert len(said) == 1
    assert said[0].startswith(f"taking over the lock of grid g in runs ({path}) from pid "
                              f"{proc.pid} on host {socket.gethostname()}")
    assert "gone" in said[0]


def test_a_released_lock_is_empty_and_free_without_a_message(holder):
    proc, path = holder
    proc.stdin.close()  # the holder leaves its `with` block and exits
    assert proc.wait(timeout=60) == 0
    assert path.read_text() == ""
    said = []
    with output_lock(path, "x", echo=said.append):
        pass
    assert said == []


def test_the_same_process_cannot_hold_one_place_twice_but_two_places_at_once(tmp_path):
    first, second = ablate_lock_path(tmp_path, "paper_aaaa"), ablate_lock_path(tmp_path,
                                                                              "paper_bbbb")
    assert first.parent == second.parent == tmp_path / "locks"
    with output_lock(first, "grid paper_aaaa"), output_lock(second, "grid paper_bbbb"):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} "):
            with output_lock(first, "grid paper_aaaa"):
                pass
    with output_lock(first, "grid paper_aaaa"):  # released by the block's end
        pass


def test_parse_holder_of_empty_or_foreign_text_is_none():
    assert parse_holder("") is None
    assert parse_holder("not json") is None
    assert parse_holder('{"pid": 1}') is None
    holder = parse_holder('{"host": "h", "pid": 7, "command": "c", "started": "t"}')
    assert holder.describe() == "pid 7 on host h (since t): c"
