"""The pricefeed benchmark (``pricefeed bench``): pricefeed beside the physical limit, one
module per concern.

``run``         the command line (``Harness``): which suites, in what order, and the report
``plan``        how much to measure: the full run and --quick
``procs``       child processes (forked workers and the C baseline), each killed by pid on exit
``resources``   unique feed and segment names, and the clean-up that leaves /dev/shm as it was
``stats``       percentiles, summaries and ratios
``links``       one sender and its receivers, for pricefeed and for the bare ctypes futex
``cfutex``      the C futex baseline: futex_pingpong.c compiled at run time, driven over a pipe
``latency``     interleaved rounds of paced changes, for any contender
``wake``        wake latency, bursts, fan-out, targeted wake-ups, latency against scale
``throughput``  publish rates, reads, publish cost and memory against scale, beside the floors
``delivery``    the highest change rate one subscriber follows, beside multiprocessing.Pipe
``report``      the machine, the table, the targets and the JSON file

A checkout's scripts/bench imports these to compare pricefeed with other transports.
"""
