"""A hand-built engine view for policy tests: the fields a policy reads, set per test."""

from dataclasses import dataclass, field


@dataclass
class View:
    clock: float = 0.0
    waiting: list = field(default_factory=list)
    running: list = field(default_factory=list)
    free_blocks: int = 1000
    total_blocks: int = 1000
    block_size: int = 16
    watermark_blocks: int = 0
    token_budget: int = 512
    max_num_seqs: int = 128
    max_model_len: int = 8192
    enable_prefix_caching: bool = False

    def waiting_by(self, key):
        return sorted(self.waiting, key=lambda r: (*key(r), r.id))
