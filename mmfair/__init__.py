"""mmfair: benchmark EHR + chest X-ray fusion for performance, robustness to a missing modality, and fairness."""

import os

# timm must never reach for the network; the variable has to be set before timm is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
