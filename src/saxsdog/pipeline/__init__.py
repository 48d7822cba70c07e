"""The image pipeline: sources → a pool of worker processes → sinks.

Independent of any transport: the command-line tool drives it directly, the server
adapts it to ZeroMQ and HTTP.
"""

from .options import QueueOptions
from .tasks import ImageResult, ImageTask

__all__ = ["QueueOptions", "ImageTask", "ImageResult", "ImageQueue"]


def __getattr__(name):
    if name == "ImageQueue":
        from .queue import ImageQueue

        return ImageQueue
    raise AttributeError(name)
