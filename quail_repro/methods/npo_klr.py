"""NPO_KLR: NPO on forget + alpha * KLR on retain."""
from quail_repro.methods.npo import NPO
from quail_repro.methods.regularizers import KLR


class NPO_KLR(KLR, NPO):
    pass
