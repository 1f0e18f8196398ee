"""mailbridge benchmarks (issue 9, SPEC §6 "Fast"): `make bench` runs `python -m bench.run`.

Modules: `corpus` makes alert mail the shipped rules match, `harness` starts the servers and
runs mailbridge in a child process, one module per benchmark (`backlog`, `latency`, `scaling`,
`memory`, `storm`), and `run` ties them together and writes docs/performance.md.
"""
