"""The one compiled part: eacct.chunks._native (the chunker's inner loops without the GIL; see its source).

Optional: where there is no compiler or no OpenSSL headers the install goes on without it, and the chunker
hashes with hashlib and cuts with the fastcdc package instead. Everything else is configured in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("eacct.chunks._native", ["eacct/chunks/_native.c"], libraries=["crypto"], optional=True),
    ],
)
