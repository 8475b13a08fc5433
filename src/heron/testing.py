"""Helpers for testing workflows (the same module as :mod:`heron.runtime.testing`).

```python
from heron.testing import test_runtime

rt, clock = test_runtime()
```
"""

from heron.runtime.testing import *  # noqa: F403
from heron.runtime.testing import __all__ as __all__
