"""convstore benchmark harness: `python -m bench` (or `make bench`).

It starts its own nats-server and `convstore serve`, runs the workloads against them over
HTTP, measures the raw JetStream baseline on the same server in the same run, and reports
figures beside that baseline (table on stdout, results/latest.json, results/latency.png).
"""
