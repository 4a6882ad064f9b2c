"""insite beside NVIDIA FLARE 2.9's simulator, same UNet, data and site training: ``python -m bench.flare.compare``.

Only :mod:`bench.flare.compare` runs in insite's environment; the other modules run in the bench's
own virtualenv, where nvflare is installed (it is never one of insite's dependencies).
"""
