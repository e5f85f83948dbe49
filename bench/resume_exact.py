"""How far a resumed run ends from the same run left alone (MUDA with a retain bank).

Evidence for issue #14: before the run state carried the method's own state, MUDA with
`muda.basis=bank` resumed after epoch 1 ended 2.2e-3 away (max |Δw|, digits-class, 3 epochs,
2-core VM, 1d08b3e); now the difference is exactly 0. Prints hardware, settings and the figure.

    .venv/bin/python -m bench resume_exact
"""

import io

import torch

from bench.common import header, parser
from dimalign.config import build_config
from dimalign.methods import REGISTRY
from dimalign.methods.loop import unlearn
from dimalign.train import get_baselines

SETTINGS = ["train.epochs=2", "muda.epochs=3", "muda.retain_fraction=0.1", "muda.basis=bank",
            "muda.bank_refresh=3", "muda.bank_size=64"]


def main(argv: list[str] | None = None) -> int:
    parser(__name__).parse_args(argv)  # no options: --help only
    cfg = build_config("digits-class", SETTINGS)
    b = get_baselines(cfg)
    saved = []

    def keep(state: dict) -> None:  # through bytes, as a worker's checkpoint file
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        saved.append(torch.load(buffer, weights_only=True))

    whole = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device, checkpoint=keep)
    header("a resumed run against the same run left alone",
           {"preset": "digits-class", "device": b.device, "sets": " ".join(SETTINGS)})
    for state in saved[:-1]:
        resumed = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                          resume=state)
        gap = max((whole.model.state_dict()[k].double() - v.double()).abs().max().item()
                  for k, v in resumed.model.state_dict().items())
        print(f"resumed after epoch {state['epoch']}: max |w - w_resumed| = {gap:.3g}")
    return 0
