"""The batch every attack test attacks: an undefended MLP on 60 digits."""

from __future__ import annotations

import pytest
from torch import Tensor, nn

from tests.core.robust_models import digits, undefended


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, Tensor, Tensor]:
    data = digits()
    return undefended(), data.x_test[:60], data.y_test[:60]
