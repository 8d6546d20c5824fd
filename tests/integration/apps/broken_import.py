"""An application module whose import fails, as after a bad edit."""

import this_module_does_not_exist_anywhere  # noqa: F401

app = None
