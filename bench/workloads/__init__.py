"""One module per workload; each exposes `async def run(ctx) -> dict` of figures.

Figures are plain JSON values. Latency series are summaries (bench.stats.summary), which
carry their CDF for the chart.
"""
