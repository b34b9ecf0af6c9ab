"""Request batching: concurrent requests share one model call.

As TF Serving's batching: a request's work item waits in a queue; one
worker thread takes the first waiting item, then everything else already
waiting, then keeps collecting for at most ``window_s`` (the batching
window) or until ``max_batch`` items, and runs ``process(items)`` once for
all of them. Under load the queue fills while the model runs, so batches
form without waiting; a lone request waits at most the window.

The worker is one thread, so the model and the index are only ever used by
one thread at a time (no locks inside them needed).
"""

import concurrent.futures
import queue
import threading
import time


class Batcher:
    """Batches items for ``process(list of items) -> list of results``.

    ``process`` returns one result per item, in order; a result that is an
    ``Exception`` instance is raised to that item's caller only. If
    ``process`` raises, every item of the batch gets the exception.

    Counters (read them any time): ``calls`` (process calls), ``items``
    (items processed), ``largest`` (the largest batch so far).
    """

    def __init__(self, process, max_batch=32, window_s=0.005, name="batcher"):
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch!r}.")
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0; got {window_s!r}.")
        self.process = process
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.calls = self.items = self.largest = 0
        self._queue = queue.Queue()
        self._stop = object()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item):
        """A ``concurrent.futures.Future`` of ``item``'s result (wrap it with
        ``asyncio.wrap_future`` in async code)."""
        future = concurrent.futures.Future()
        self._queue.put((item, future))
        return future

    def close(self, timeout=5.0):
        """Finish what is queued, then stop the worker."""
        self._queue.put(self._stop)
        self._thread.join(timeout)

    def _collect(self, first):
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if nxt is self._stop:
                self._queue.put(nxt)       # handled after this batch
                break
            batch.append(nxt)
        return batch

    def _run(self):
        while True:
            first = self._queue.get()
            if first is self._stop:
                return
            batch = self._collect(first)
            items = [item for item, _ in batch]
            try:
                results = self.process(items)
                if len(results) != len(items):
                    raise RuntimeError(f"process returned {len(results)} results for "
                                       f"{len(items)} items.")
            except Exception as error:  # noqa: BLE001  (given to every caller)
                results = [error] * len(items)
            self.calls += 1
            self.items += len(items)
            self.largest = max(self.largest, len(items))
            for (_, future), result in zip(batch, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
