"""The one compiled part: eacct.chunks._digests (sha256 of many chunks without the GIL; see its source).

Optional: where there is no compiler or no OpenSSL headers the install goes on without it and
eacct.chunks.digests hashes with hashlib instead. Everything else is configured in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("eacct.chunks._digests", ["eacct/chunks/_digests.c"], libraries=["crypto"], optional=True),
    ],
)
