"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# Property tests check behaviour, not speed: on a shared, busy machine an example can take longer than
# hypothesis' default 200 ms deadline and be reported as flaky. Speed is measured in tests/bench.
settings.register_profile("strangler", deadline=None)
settings.load_profile("strangler")
