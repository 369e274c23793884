"""The eager-PyTorch peer of the harness's benchmark MMoE (4 experts [64, 32], towers [32]): the same model, static weights, Adam, 2 threads.

Alone, prints one line per batch size: `<batch> <median ms/step>`
(.venv/bin/python crates/balance-harness/benches/peer_mmoe.py). With `serve`, benches/throughput.rs drives it
round by round, interleaved with its own steps, so both see the same machine load.
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 60


class MMoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(1000, 16) for _ in range(4)])
        d = 8 + 4 * 16
        self.experts = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU()) for _ in range(4)])
        self.gates = nn.ModuleList([nn.Linear(d, 4) for _ in range(3)])
        self.towers = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)) for _ in range(3)])

    def forward(self, dense, ids):
        x = torch.cat([dense] + [e(ids[:, i]) for i, e in enumerate(self.emb)], 1)
        experts = torch.stack([e(x) for e in self.experts], 1)  # [B, E, H]
        outs = []
        for gate, tower in zip(self.gates, self.towers):
            w = F.softmax(gate(x), -1).unsqueeze(1)
            outs.append(tower(torch.bmm(w, experts).squeeze(1)))
        return outs


def make_step(batch):
    model = MMoE()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    dense = torch.randn(batch, 8)
    ids = torch.randint(0, 1000, (batch, 4))
    y = (torch.rand(batch, 3) < 0.2).float()

    def step():
        opt.zero_grad()
        outs = model(dense, ids)
        loss = sum(F.binary_cross_entropy_with_logits(o, y[:, i:i + 1]) for i, o in enumerate(outs))
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    return step


def timed(step, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    return times


if len(sys.argv) > 1 and sys.argv[1] == "serve":
    # Interleaved mode (benches/throughput.rs): each stdin line `<batch> <steps>` runs that many steps
    # (the model for a batch size is built and warmed up once) and prints their times in ms.
    steps_for = {}
    for line in sys.stdin:
        batch, n = map(int, line.split())
        if batch not in steps_for:
            steps_for[batch] = make_step(batch)
        print(" ".join(f"{t:.4f}" for t in timed(steps_for[batch], n)), flush=True)
else:
    for batch in (256, 1024, 4096):
        times = sorted(timed(make_step(batch), STEPS))
        print(batch, times[len(times) // 2], flush=True)
