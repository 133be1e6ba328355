"""The no-op job RQ runs in bench/peer-rq.sh."""


def noop():
    return None
