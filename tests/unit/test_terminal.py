"""Text from hosts reaches the terminal shown, never obeyed; tails of host files are bounded."""

from __future__ import annotations

import pytest
from invoke.exceptions import Exit

from fabfile.errors import FleetbenchError, clean_errors
from fabfile.remote.shell import REMOTE_DIR, TAIL_BYTES
from fabfile.servers import nodes
from fabfile.servers.nodes import Node
from fabfile.terminal import printable, say

HOSTILE = "ok\x1b]0;owned\x07 \x1b[2J\x1b[31mred\r\x08\x7f\x9b31m \u202egnp.exe\u2066 end\r\n"


def test_every_control_character_is_shown_as_an_escape():
    shown = printable(HOSTILE)
    assert shown == ("ok\\x1b]0;owned\\x07 \\x1b[2J\\x1b[31mred\\x0d\\x08\\x7f\\x9b31m \\u202egnp.exe\\u2066 end\n")
    assert all(ch in "\t\n" or (ch.isprintable() and ch != "\x7f") for ch in shown)


def test_tabs_newlines_and_ordinary_unicode_stay():
    assert printable("a\tb\nµs ✓ 東京") == "a\tb\nµs ✓ 東京"


def test_say_and_task_errors_print_nothing_a_terminal_obeys(capsys):
    say(f"[tb1] {HOSTILE}")
    with pytest.raises(Exit) as raised, clean_errors("deploy"):
        raise FleetbenchError(f"tb1: `x` failed:\n{HOSTILE}")
    out = capsys.readouterr().out + str(raised.value.message)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b[31mred" in out  # shown, so the user sees what the host sent


def test_a_node_log_tail_is_bounded_however_long_its_lines(local_host):
    node = Node("local", "127.0.0.1", 7003, 0, pid=1)
    directory = local_host.home / REMOTE_DIR / "nodes" / "7003"
    directory.mkdir(parents=True)
    (directory / nodes.START_LOG).write_bytes(b"x" * (20 << 20))  # 20 MB, not one newline
    (directory / nodes.LOG).write_text("".join(f"line {i}\n" for i in range(1000)))
    out = nodes.log_tail(local_host, node)
    assert len(out) < 2 * TAIL_BYTES + 200
    assert "line 999" in out and "line 979" not in out
