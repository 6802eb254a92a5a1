"""Textbook NumPy float32 MLP (Linear/ReLU stack + softmax cross-entropy + SGD).

The reference peer for the benchmarks. W is stored (in, out): Z = X @ W + b.
"""

import numpy as np


class NumpyMLP:
    def __init__(self, sizes, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.W = []
        self.b = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2.0 / a))
            self.W.append(np.ascontiguousarray(w, dtype=self.dtype))
            self.b.append(np.zeros(b, dtype=self.dtype))

    def set_params(self, Ws, bs):
        """Copy weights in (W as (in, out))."""
        for dst, src in zip(self.W, Ws):
            dst[...] = src
        for dst, src in zip(self.b, bs):
            dst[...] = src

    def forward(self, x, keep=None):
        """Logits. If ``keep`` is a list, layer inputs are appended to it."""
        h = x
        last = len(self.W) - 1
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            if keep is not None:
                keep.append(h)
            z = h @ W
            z += b
            if i < last:
                np.maximum(z, 0, out=z)  # ReLU in place
            h = z
        return h

    predict = forward

    def train_step(self, x, y, lr):
        """Forward + softmax CE (mean over batch) + backward + plain SGD. Returns the loss."""
        acts = []
        z = self.forward(x, keep=acts)
        n = x.shape[0]
        rows = np.arange(n)

        # Stable softmax cross-entropy with integer labels.
        m = z.max(axis=1, keepdims=True)
        z -= m  # shifted logits (z is not needed afterwards)
        picked = z[rows, y]
        p = np.exp(z, out=z)
        s = p.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - picked))

        # dL/dz = (softmax - onehot) / N
        p /= s
        p[rows, y] -= 1.0
        p *= np.float32(1.0 / n)
        g = p

        lr = np.float32(lr)
        for i in range(len(self.W) - 1, -1, -1):
            W, b, a_in = self.W[i], self.b[i], acts[i]
            dW = a_in.T @ g
            db = g.sum(axis=0)
            if i > 0:  # no input gradient for the first layer
                g = g @ W.T
                g *= a_in > 0  # ReLU'(z) == (relu(z) > 0)
            dW *= lr
            W -= dW
            db *= lr
            b -= db
        return loss
