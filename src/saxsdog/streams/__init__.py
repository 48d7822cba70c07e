"""Detector streams: frames received over the network and integrated without image files.

:mod:`~saxsdog.streams.dectris` receives (and, for tests and replays, sends) the Dectris
SIMPLON stream v1; :mod:`~saxsdog.io.codecs` decodes its frame encodings in the
workers; :mod:`~saxsdog.streams.raw` optionally keeps the raw frames as NeXus files.
"""
