"""Where training runs. In-process today (CPU and one GPU); the subprocess and
`accelerate launch` launchers plug in here (issue: engines and launchers)."""

from __future__ import annotations

from pathlib import Path

from selflengthen.config import Config
from selflengthen.model import pick_device
from selflengthen.store import RoundDir
from selflengthen.train.sft import train_adapter


def train_role(config: Config, base: str, rd: RoundDir, role: str, init_adapter: Path | None) -> dict:
    device = pick_device(config.model.device)
    return train_adapter(
        base=base,
        data=rd.sft(role),
        out_dir=rd.adapter(role),
        train_config=config.train,
        init_adapter=init_adapter,
        work_dir=rd.work / f"train-{role}",
        device=device,
        dtype=config.model.dtype,
        gradient_checkpointing=config.train.gradient_checkpointing,
    )
