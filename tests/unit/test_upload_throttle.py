"""The patient upload pages' request limits (gateway/uploads/throttle.py)."""

from __future__ import annotations

import pytest

from gateway.uploads.throttle import RateLimited, SlidingWindow, UploadThrottle


def test_a_window_allows_its_limit_then_refuses_without_counting() -> None:
    window = SlidingWindow(3)
    assert [window.hit("a") for _ in range(5)] == [True, True, True, False, False]
    assert window.hit("b")  # another key has its own count


def test_an_address_over_its_limit_is_refused_whatever_the_link() -> None:
    throttle = UploadThrottle(per_address=2, per_link=100)
    throttle.check("192.0.2.1", "link-one")
    throttle.check("192.0.2.1", "link-two")
    with pytest.raises(RateLimited) as refused:
        throttle.check("192.0.2.1", "link-three")
    assert refused.value.status == 429 and refused.value.code == "upload-rate-limited"
    throttle.check("192.0.2.2", "link-three")  # another address is not held back


def test_a_link_over_its_limit_is_refused_from_every_address() -> None:
    throttle = UploadThrottle(per_address=100, per_link=2)
    throttle.check("192.0.2.1", "link")
    throttle.check("192.0.2.2", "link")
    with pytest.raises(RateLimited):
        throttle.check("192.0.2.3", "link")
