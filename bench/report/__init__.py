"""From agent results to what people read: ``screen`` checks each result, ``merge`` and
``seconds`` merge them exactly into run.json (histograms added, never percentiles averaged),
``expect`` judges a benchmark's expectations, ``compare`` tells change from noise across
runs; ``tables``, ``plots``, ``html`` and ``hosts`` show a run, and ``export`` writes the
formats other tools read (hlog, CSV, OpenMetrics, JUnit, github-action-benchmark, Bencher,
InfluxDB; ``headline``, ``timeline`` and ``history`` feed them). Pure: files in, data out."""
