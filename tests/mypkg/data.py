"""``mypkg.data.load``: a user's data, as the README plugs it in (``dataset._target_``)."""

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
