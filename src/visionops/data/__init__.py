"""Building blocks of data: probing files, the Great Expectations suites, DVC's cache and remotes, decoding and
preprocessing, the image cache, the input pipeline, augmentation and the embedded sample. Never imports a service.
"""
