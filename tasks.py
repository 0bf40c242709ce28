"""fleetbench's ``inv`` entry point in the source checkout: the installed tasks (fabfile/cli/tasks.py,
also the ``fleetbench`` command's) and the developer tools of the checkout (devtools/tasks.py).

    inv demo                      testbed up, spawn the embedded default, testbed down
    inv spawn                     deploy, bench, collect, down
    inv deploy bench collect      the same steps, chained in one call (one connection per host)
"""

from __future__ import annotations

from devtools.tasks import demo, perf, testbed, testbed_down, testbed_status, testbed_up
from fabfile.cli.tasks import (
    attach,
    bench,
    build,
    check,
    collect,
    compare,
    deploy,
    down,
    namespace,
    plot,
    report,
    runs,
    spawn,
    status,
)

__all__ = ["attach", "bench", "build", "check", "collect", "compare", "demo", "deploy", "down", "perf", "plot",
           "report", "runs", "spawn", "status", "testbed", "testbed_down", "testbed_status", "testbed_up"]

ns = namespace()
ns.add_task(demo)
ns.add_task(perf)
ns.add_collection(testbed)
