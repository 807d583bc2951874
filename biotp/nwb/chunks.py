"""Traces copied piecewise: a biotp trace [time, example, neuron] read from its h5py
dataset one buffer at a time and handed to hdmf in NWB's row order, so an export never
holds a whole trace in memory."""

from __future__ import annotations

import math

from hdmf.data_utils import GenericDataChunkIterator

CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB
BUFFER_BYTES = 8 << 20  # read, reordered and compressed 8 MiB at a time (HDF5 needs about as much again)


class TrialMajor(GenericDataChunkIterator):
    """Rows trial after trial, each trial's samples in order: shape [trials·samples,
    (batch,) neuron], the batch axis dropped when one example is shown per trial."""

    def __init__(self, dataset, batch: int):
        self.source, self.batch = dataset, batch
        self.samples, columns, *neurons = dataset.shape
        self.trials = columns // batch
        self.row = ((batch,) if batch > 1 else ()) + tuple(neurons)
        row_bytes = max(1, math.prod(self.row) * dataset.dtype.itemsize)
        total = self.trials * self.samples
        chunk = min(total, max(1, CHUNK_BYTES // row_bytes))
        if chunk >= self.samples:
            chunk -= chunk % self.samples  # whole trials per chunk when they fit
        buffer = min(total, chunk * max(1, BUFFER_BYTES // (chunk * row_bytes)))
        super().__init__(chunk_shape=(chunk, *self.row), buffer_shape=(buffer, *self.row))

    def _get_maxshape(self):
        return (self.trials * self.samples, *self.row)

    def _get_dtype(self):
        return self.source.dtype

    def _get_data(self, selection):
        rows, rest = selection[0], tuple(selection[1:])
        n, B = self.samples, self.batch
        first, end = rows.start // n, (rows.stop - 1) // n + 1  # the trials [first, end) the rows touch
        lo, hi = rows.start - first * n, rows.stop - first * n  # the rows within those trials
        t0, t1 = (lo, hi) if end - first == 1 else (0, n)
        block = self.source[t0:t1, first * B:end * B]  # [time, trial·batch, neuron]: one read
        block = block.reshape(t1 - t0, end - first, B, -1).swapaxes(0, 1).reshape(-1, B, block.shape[-1])
        if end - first > 1:
            block = block[lo:hi]
        if B == 1:
            block = block[:, 0]
        return block[(slice(None), *rest)]
