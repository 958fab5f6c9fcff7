"""GA_GDR: GA on forget + alpha * GDR on retain."""
from quail_repro.methods.ga import GA
from quail_repro.methods.regularizers import GDR


class GA_GDR(GDR, GA):
    pass
