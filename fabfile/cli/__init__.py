"""The command line: the ``fleetbench`` program and the tasks it shares with ``inv``.

    tasks.py      the tasks and their namespace (the checkout's ``tasks.py`` re-exports them for ``inv``)
    options.py    the options a chain shares (spawn file, hosts, ssh) and the check that they agree
    program.py    ``fleetbench``: an Invoke Program over the tasks, taking those options once
"""
