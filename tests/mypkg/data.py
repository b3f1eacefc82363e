"""``mypkg.data.load``: a user's data, as the docs plug it in (``dataset._target_``)."""

import torch
import torch.nn.functional as F


def load(n: int = 512, d: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): ``n`` examples of ``classes`` Gaussian blobs in ``d``
    dimensions, a quarter of them for validation."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=generator)
    x = torch.randn(n, d, generator=generator) + 2.0 * F.one_hot(y, d).float()
    split = n * 3 // 4
    return x[:split], y[:split], x[split:], y[split:]


def bad(kind: str) -> object:
    """Data with one thing wrong, as users have returned it (tests/test_bad_input.py)."""
    import numpy as np

    x_train, y_train, x_val, y_val = load()
    return {
        "labels_n_by_2": (
            x_train,
            y_train[:, None].repeat(1, 2),
            x_val,
            y_val[:, None].repeat(1, 2),
        ),
        "empty_val": (x_train, y_train, x_val[:0], y_val[:0]),
        "negative_labels": (x_train, y_train - 1, x_val, y_val - 1),
        "object_dtype": (np.array([[1.0], "a"], dtype=object), y_train, x_val, y_val),
    }[kind]
