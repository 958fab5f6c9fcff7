"""NPO_GDR: NPO on forget + alpha * GDR on retain."""
from quail_repro.methods.npo import NPO
from quail_repro.methods.regularizers import GDR


class NPO_GDR(GDR, NPO):
    pass
