"""Benchmarks (`make bench`): each module here has `main(argv) -> int` and prints its figures as
ratios against a raw baseline measured in the same run. Never timed assertions in tests."""

import secrets

# What a benchmark's processes run with: the production settings (DEBUG off), served over plain
# http on loopback, with a throwaway secret key (production refuses to start without one).
PRODUCTION_ENV = {
    "DEBUG": "False",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SECURE_SSL_REDIRECT": "False",
    "SECURE_COOKIES": "False",
}
