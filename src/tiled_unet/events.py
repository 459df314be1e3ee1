"""Running the progress generators of the API (``predict_iter``, ``segment_iter``, ...) to the end."""

from __future__ import annotations

from typing import Any, Callable, Generator


def run_to_end(gen: Generator[Any, None, Any], progress: Callable[[Any], None] | None) -> Any:
    """Exhaust ``gen``, passing each event to ``progress`` (if given); return its return value.

    An exception on the way (Ctrl-C included) closes ``gen`` first, so that its clean-up (e.g.
    writing the weights kept so far) is done before the exception goes on.
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(event)
    except BaseException:
        gen.close()
        raise
