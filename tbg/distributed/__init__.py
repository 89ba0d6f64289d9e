"""Distributed training on torch.distributed, launched by torchrun (docs/distributed.md).

``env.py`` the launch and the agent's store; ``leases.py`` bucket leases, heartbeats, waits; ``sync.py`` the
merge of shared parameters; ``trainer.py`` one trainer's rounds; ``run.py`` its life (lock, failures) and
``tbg train --nproc``.
"""
