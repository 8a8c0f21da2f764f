"""GPU-layer checks of BandPO's claims (placeholder until the PyTorch checks land)."""
