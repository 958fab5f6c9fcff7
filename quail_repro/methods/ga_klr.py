"""GA_KLR: GA on forget + alpha * KLR on retain."""
from quail_repro.methods.ga import GA
from quail_repro.methods.regularizers import KLR


class GA_KLR(KLR, GA):
    pass
