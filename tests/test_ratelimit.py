"""The token bucket behind --registrations-per-minute."""

from ks.core.ratelimit import TokenBucket


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_burst_of_the_limit_then_one_per_share_of_the_minute():
    clock = Clock()
    bucket = TokenBucket(3, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 19  # a token takes 20 s
    assert not bucket.take()
    clock.now += 1
    assert bucket.take() and not bucket.take()
    clock.now += 3600  # never more than the limit saved up
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_zero_is_no_limit_and_a_shared_bucket_counts_the_same():
    assert all(TokenBucket(0).take() for _ in range(1000))
    clock = Clock()
    shared = TokenBucket(2, clock, shared=True)
    assert [shared.take() for _ in range(3)] == [True, True, False]
