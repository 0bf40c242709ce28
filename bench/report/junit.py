"""A run's expectations as JUnit XML (``export/junit.xml``), the report format CI systems show.

One ``<testsuite>`` per benchmark that has expectations, one ``<testcase>`` per expectation
(``name`` the expectation as written, ``classname`` ``fleetbench.<benchmark>``): a failed one has
a ``<failure>`` whose message is the measured value, a passed one says the value in
``<system-out>``. A run without expectations gives an empty ``<testsuites>`` (tests="0").
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from bench.report.document import RunDoc


def render(run: RunDoc) -> str:
    run_id, name = str(run.get("run_id", "")), str(run.get("name", ""))
    root = ET.Element("testsuites", name=f"fleetbench {name}")
    total = failed = 0
    for entry in run.get("benchmarks", ()):
        verdicts = entry.get("expectations") or ()
        if not verdicts:
            continue
        failures = sum(1 for v in verdicts if not v.get("passed"))
        suite = ET.SubElement(root, "testsuite", name=str(entry["name"]), tests=str(len(verdicts)),
                              failures=str(failures), errors="0", skipped="0",
                              time=f"{float(entry.get('seconds') or 0.0):.3f}")
        started = entry.get("started_at")
        if isinstance(started, (int, float)):
            suite.set("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)))
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="run", value=run_id)
        ET.SubElement(properties, "property", name="workload", value=str(entry.get("workload")))
        for verdict in verdicts:
            case = ET.SubElement(suite, "testcase", name=str(verdict["expect"]),
                                 classname=f"fleetbench.{entry['name']}", time="0")
            measured = str(verdict.get("measured_text"))
            if verdict.get("passed"):
                ET.SubElement(case, "system-out").text = measured
            else:
                failure = ET.SubElement(case, "failure", message=measured, type="expectation")
                failure.text = f"{entry['name']}: expected {verdict['expect']}, measured {measured}"
        total += len(verdicts)
        failed += failures
    root.set("tests", str(total))
    root.set("failures", str(failed))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
