"""funnelcast's quality suite: unlike data sets, independent baselines and the product, side by side.

Run it with ``make quality``. Nothing here is installed with funnelcast; it runs from the repository.
"""
