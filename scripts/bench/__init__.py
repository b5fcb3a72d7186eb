"""pricefeed beside its peers: the comparison harness, run from a checkout as
``python3 scripts/bench/run.py [--quick] [--only SUITES] [--json PATH] [--plot DIR]``.

The measuring code is the package's (pricefeed._bench, which ``pricefeed bench`` runs); what
is here is only what compares pricefeed with other transports:

``run``        the command: pricefeed._bench's Harness with the peers added to its suites
``peers``      the peer links (Pipe, posix_ipc semaphore, eventfd, ZeroMQ, iceoryx2) and
               the one target about them
``resources``  the names the peers make outside pricefeed's (socket files, iceoryx2
               segments), removed at the end of the run
``plots``      the PNGs of ``--plot``
"""
