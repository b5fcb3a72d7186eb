"""Recording a feed to a file, replaying it, exporting it (docs/recording.md).

``format`` is the file (written, and read back as untrusted input); ``recorder`` follows a
feed and appends to a file; ``replayer`` publishes a file into a feed; ``export`` writes it
as CSV or Parquet. Nothing here is loaded unless one of the commands, or the caller, asks.
"""
