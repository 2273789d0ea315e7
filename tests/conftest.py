"""Suite-wide setup: helpers in tests/support get pytest's assertion rewriting, so a failing
assertion inside a shared helper shows the compared values."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.support")
