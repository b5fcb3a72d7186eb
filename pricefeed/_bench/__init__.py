"""The pricefeed benchmark (``pricefeed bench``, or scripts/bench.py): one module per concern.

``run``         the command line: which suites, in what order, and the report

``procs``       child processes (forked workers and the C baseline), each killed by pid on exit
``resources``   unique feed and segment names, and the clean-up that leaves /dev/shm as it was
``stats``       percentiles, summaries and ratios
``links``       one sender and its receivers, for pricefeed and for each baseline transport
``cfutex``      the C futex baseline: compiled at run time, driven over a pipe
``latency``     wake latency, bursts, fan-out, targeted wake-ups, latency against scale
``throughput``  publish and delivery rates, reads, publish cost and memory against scale
``report``      the machine, the table, the targets, the JSON file and the plots
"""
