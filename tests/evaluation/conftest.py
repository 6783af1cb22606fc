from __future__ import annotations

import pandas as pd
import pytest
from eval_fixtures import make_interactions


@pytest.fixture
def interactions() -> pd.DataFrame:
    return make_interactions()
