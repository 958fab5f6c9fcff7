"""``python -m quail_repro.report SWEEP_DIR [--wandb]``"""
import sys

from quail_repro.report.cli import main

sys.exit(main())
