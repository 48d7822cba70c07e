"""Detector streams: frames received over the network and integrated without image files.

:mod:`~saxsdog.streams.dectris` receives (and, for tests and replays, sends) the Dectris
SIMPLON stream v1; :mod:`~saxsdog.io.codecs` decodes its frame encodings in the
workers (straight into each worker's reused frame buffer); :mod:`~saxsdog.streams.stream2`
reads stream v2 (CBOR) without copying the frames; :mod:`~saxsdog.pipeline.stream_warmup` gets a
new worker ready for stream frames before the first one; :mod:`~saxsdog.streams.raw`
optionally keeps the raw frames as NeXus files.
"""
