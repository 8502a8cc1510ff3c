"""Building blocks of training: the backbone and its weights, the classifier, the fitting recipe and its
embedding cache, distribution, scoring, the error gallery, plots and sweeps. Never imports a service.
"""
