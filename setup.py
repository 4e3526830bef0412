"""The compiled parts, each optional: the install goes on without one where its compiler or headers are missing.

- eacct.chunks._native: the chunker's inner loops without the GIL (needs OpenSSL's headers); without it the
  chunker hashes with hashlib and cuts with the fastcdc package.
- eacct.chunks._frames: batches of chunks compressed into zstd frames, and decompressed back, without the GIL
  (needs libzstd's headers); without it uploads and downloads go chunk by chunk with python-zstandard.

Everything else is configured in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("eacct.chunks._native", ["eacct/chunks/_native.c"], libraries=["crypto"], optional=True),
        Extension("eacct.chunks._frames", ["eacct/chunks/_frames.c"], libraries=["zstd"], optional=True),
    ],
)
