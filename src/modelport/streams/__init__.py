"""Streams: the worker that scores or learns from a message stream (``worker``) and the message brokers behind it (``brokers``)."""
