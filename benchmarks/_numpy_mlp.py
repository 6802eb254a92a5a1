"""Textbook NumPy float32 MLP (Linear/ReLU stack + softmax cross-entropy + SGD,
or Adam as torch.optim.Adam computes it).

The reference peer for the benchmarks. W is stored (in, out): Z = X @ W + b.
"""

import numpy as np


def softmax_xent(z, y):
    """Mean softmax cross-entropy of logits z (N, C) with integer labels y
    (N,), and its gradient dL/dz = (softmax - onehot) / N (N, C), computed
    in z's memory (z is not needed afterwards)."""
    n = z.shape[0]
    rows = np.arange(n)
    z -= z.max(axis=1, keepdims=True)  # shifted logits: stable exp
    picked = z[rows, y]
    p = np.exp(z, out=z)
    s = p.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - picked))
    p /= s
    p[rows, y] -= 1.0
    p *= np.float32(1.0 / n)
    return loss, p


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
        loss, g = softmax_xent(z, y)

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


class NumpyAdamMLP(NumpyMLP):
    """The same MLP trained by Adam (torch.optim.Adam's rule, no weight
    decay), its state as float32 arrays updated in place:
    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(self, sizes, seed=0, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(sizes, seed)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.t = 0
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]
        self.tmp = [np.empty_like(p) for p in self.W + self.b]

    def gradients(self, x, y):
        """Loss and [dW..., db...] (layer order) of the mean cross-entropy."""
        acts = []
        z = self.forward(x, keep=acts)
        loss, g = softmax_xent(z, y)
        dWs, dbs = [None] * len(self.W), [None] * len(self.W)
        for i in range(len(self.W) - 1, -1, -1):
            dWs[i] = acts[i].T @ g
            dbs[i] = g.sum(axis=0)
            if i > 0:  # no input gradient for the first layer
                g = g @ self.W[i].T
                g *= acts[i] > 0
        return loss, dWs + dbs

    def train_step(self, x, y, lr=None):
        loss, grads = self.gradients(x, y)
        self.t += 1
        b1, b2 = np.float32(self.b1), np.float32(self.b2)
        step = np.float32(self.lr / (1 - self.b1 ** self.t))
        root_bc2 = np.float32(np.sqrt(1 - self.b2 ** self.t))
        for p, g, m, v, d in zip(self.W + self.b, grads, self.m, self.v, self.tmp):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            np.multiply(g, g, out=g)
            g *= 1 - b2
            v += g
            np.sqrt(v, out=d)
            d /= root_bc2
            d += np.float32(self.eps)
            np.divide(m, d, out=d)
            d *= step
            p -= d
        return loss
